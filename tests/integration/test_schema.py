"""schemathesis against the gateway's own OpenAPI document, on the production server: no 5xx, and every
response matches the document (status codes, content types, bodies)."""

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.platform import Platform

pytestmark = pytest.mark.integration
CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"


def test_openapi_document_holds_under_generated_requests(make_platform: Callable[..., Platform],
                                                         tmp_path: Path) -> None:
    platform = make_platform()
    platform.env["SM_MAX_WAIT"] = "0.5"  # generated ?wait= values must not hold requests for minutes
    platform.start("gateway")
    command = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
    run = subprocess.run(
        [command, "run", f"{platform.url}/openapi.json", "--checks", CHECKS, "--max-examples", "40",
         "--request-timeout", "10", "--no-color", "--seed", "1"],
        capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path)
    summary = run.stdout[run.stdout.rfind("SUMMARY"):]
    print(summary)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
