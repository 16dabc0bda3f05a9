"""Starting the server: its own BentoML home, and the demo's example calls printed only once it is ready."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from serving.launch import serve_and_announce, server_env
from tests.serving.conftest import free_port

STUB = """
import http.server, sys, time
flag, start = sys.argv[2], time.monotonic()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ready = time.monotonic() - start > 1.0
        if ready:
            open(flag, "w").close()
        self.send_response(200 if ready else 503)
        self.end_headers()
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
s.timeout = 0.2
while time.monotonic() - start < 3.0:
    s.handle_request()
"""


class _Out(io.StringIO):
    """Records, with everything written, whether the server had said it was ready at that moment."""

    def __init__(self, flag: Path) -> None:
        super().__init__()
        self.flag, self.ready_when_written = flag, []

    def write(self, s: str) -> int:
        self.ready_when_written.append(self.flag.exists())
        return super().write(s)


@pytest.mark.slow  # about 3 s (make test-fast stays under a minute)
def test_the_banner_is_printed_once_the_server_is_ready(tmp_path: Path) -> None:
    port, flag = free_port(), tmp_path / "ready"
    out = _Out(flag)
    code = serve_and_announce([sys.executable, "-c", STUB, str(port), str(flag)], {}, f"http://127.0.0.1:{port}",
                              "EXAMPLE CALLS", out=out, ready_timeout=30)
    assert code == 0 and "EXAMPLE CALLS" in out.getvalue()
    assert out.ready_when_written and all(out.ready_when_written)


def test_a_server_that_exits_before_it_is_ready_gets_no_banner(tmp_path: Path) -> None:
    out = io.StringIO()
    code = serve_and_announce([sys.executable, "-c", "raise SystemExit(3)"], {}, f"http://127.0.0.1:{free_port()}",
                              "EXAMPLE CALLS", out=out, ready_timeout=30)
    assert code == 3 and "EXAMPLE CALLS" not in out.getvalue()


def test_each_server_has_its_own_bentoml_home_inside_the_data_folder(tmp_path: Path) -> None:
    env = server_env(tmp_path, "127.0.0.1", 3001, base={"BENTOML_HOME": "/home/someone/bentoml", "PATH": "x"})
    assert env["BENTOML_HOME"] == str(tmp_path.resolve() / "serve" / "127.0.0.1-3001")
    assert env["PERSONALISE_DATA"] == str(tmp_path.resolve()) and env["PATH"] == "x"
    assert server_env(tmp_path, "127.0.0.1", 3002, base={})["BENTOML_HOME"] != env["BENTOML_HOME"]
