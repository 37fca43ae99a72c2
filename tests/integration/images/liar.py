"""A replica that answers with what the job asks for: a server the platform must not trust.

``POST /`` with ``{"answer": <kind>}``: ``extra_error`` (an error object with more keys than code and message),
``nan_time`` / ``inf_time`` / ``negative_time`` (a good output with a bad ``X-Inference-Seconds``), ``not_json``,
``error_not_object``; anything else succeeds with ``{"ok": true}``. ``GET /ok`` is 200.
"""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWERS: dict[str, tuple[int, dict[str, str], bytes]] = {
    "extra_error": (422, {}, json.dumps({"error": {"code": "bad_input", "message": "no", "detail": [1]}}).encode()),
    "nan_time": (200, {"X-Inference-Seconds": "nan"}, b'{"ok": true}'),
    "inf_time": (200, {"X-Inference-Seconds": "inf"}, b'{"ok": true}'),
    "negative_time": (200, {"X-Inference-Seconds": "-5"}, b'{"ok": true}'),
    "not_json": (200, {}, b"<html>oops</html>"),
    "error_not_object": (500, {}, b'{"error": "just a string"}'),
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.reply(200, {}, b'{"status": "READY"}')

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.reply(*ANSWERS.get(body.get("answer", ""), (200, {"X-Inference-Seconds": "0.001"}, b'{"ok": true}')))

    def reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        """Quiet."""


if __name__ == "__main__":
    ThreadingHTTPServer((os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"])), Handler).serve_forever()
