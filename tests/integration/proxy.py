"""A TCP proxy in front of Redis that loses one reply on cue: the fault of a connection that drops mid-call."""

import contextlib
import socket
import threading
import time


class DroppingProxy:
    """Forwards to a Redis port; once armed, the first request containing ``trigger`` runs on Redis but its
    reply is dropped, every connection is cut, and new ones are refused for ``outage`` seconds."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.trigger = b""
        self.outage = 0.0
        self.refuse_until = 0.0
        self.dropped = threading.Event()
        self.silenced: set[socket.socket] = set()
        self.sockets: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self.accept, daemon=True).start()

    @property
    def url(self) -> str:
        """The Redis URL that goes through the proxy."""
        return f"redis://127.0.0.1:{self.port}/0"

    def arm(self, trigger: bytes, outage: float) -> None:
        """Drop the reply to the next request that contains ``trigger``, then refuse for ``outage`` seconds."""
        self.trigger, self.outage = trigger, outage

    def accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if time.monotonic() < self.refuse_until:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets |= {client, server}
            threading.Thread(target=self.upstream, args=(client, server), daemon=True).start()
            threading.Thread(target=self.pump, args=(server, client), daemon=True).start()

    def upstream(self, client: socket.socket, server: socket.socket) -> None:
        """Client to Redis, watching for the trigger."""
        while chunk := self.receive(client):
            if self.trigger and self.trigger in chunk:
                self.trigger = b""
                self.refuse_until = time.monotonic() + self.outage
                with self.lock:
                    self.silenced.add(server)
                server.sendall(chunk)  # Redis runs it; pump() drops the answer
                return
            try:
                server.sendall(chunk)
            except OSError:
                break
        self.close_pair(client, server)

    def pump(self, source: socket.socket, sink: socket.socket) -> None:
        """Redis to client; the answer to the trigger is lost, and every connection with it."""
        while chunk := self.receive(source):
            if source in self.silenced:
                self.cut_all()
                self.dropped.set()
                return
            try:
                sink.sendall(chunk)
            except OSError:
                break
        self.close_pair(source, sink)

    @staticmethod
    def receive(sock: socket.socket) -> bytes:
        try:
            return sock.recv(65536)
        except OSError:
            return b""

    def close_pair(self, *pair: socket.socket) -> None:
        for sock in pair:
            with contextlib.suppress(OSError):
                sock.close()
            with self.lock:
                self.sockets.discard(sock)

    def cut_all(self) -> None:
        """Close every open connection, as a Redis that went away would."""
        with self.lock:
            sockets, self.sockets = self.sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        """Stop accepting and cut everything."""
        self.closed = True
        self.listener.close()
        self.cut_all()
