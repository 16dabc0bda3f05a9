"""A webhook receiver on 127.0.0.1 for the tests: an ``http.server`` in a thread that answers 503 to the first
``fail_first`` attempts of each trigger, 500 always on paths starting with ``/fail`` and to every request
while ``down`` is set, and records every request (path, headers, body, the status it answered, whether the
signature verified)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from serving.webhooks import SIGNATURE, verify


@dataclass
class Received:
    path: str
    trigger_id: str
    attempt: int
    body: bytes
    status: int
    signed: bool
    at: float = 0.0
    """``time.perf_counter()`` when it was answered."""


@dataclass
class Receiver:
    secret: bytes
    fail_first: int = 0
    gate: threading.Event = field(default_factory=threading.Event)
    """Requests wait for this before they are answered (set: answer at once)."""
    got: list[Received] = field(default_factory=list)
    arrived: int = 0
    """Requests received (counted before they wait for the gate)."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    down: bool = False
    delay: float = 0.0
    """Seconds every request takes to be answered (a slow receiver)."""
    """While true, every request is answered 500 (a broken receiver; clear it to "fix" it)."""

    def __post_init__(self) -> None:
        self.gate.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.arrived += 1
                receiver.gate.wait(30)
                time.sleep(receiver.delay)  # a slow receiver, not a wait on a condition
                tid = self.headers.get("X-Personalise-Trigger-Id", "")
                with receiver.lock:
                    seen = sum(1 for r in receiver.got if r.trigger_id == tid)
                    status = (500 if self.path.startswith("/fail") or receiver.down
                              else 503 if seen < receiver.fail_first else 200)
                    attempt = int(self.headers.get("X-Personalise-Attempt", 0))
                    signed = verify(receiver.secret, body, self.headers.get(SIGNATURE, ""))
                    receiver.got.append(Received(self.path, tid, attempt, body, status, signed,
                                                 time.perf_counter()))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def delivered(self) -> dict[str, int]:
        """Trigger id -> how many times it was answered 200."""
        with self.lock:
            out: dict[str, int] = {}
            for r in self.got:
                if r.status == 200:
                    out[r.trigger_id] = out.get(r.trigger_id, 0) + 1
            return out

    def attempts(self, trigger_id: str) -> list[Received]:
        with self.lock:
            return [r for r in self.got if r.trigger_id == trigger_id]

    def close(self) -> None:
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def wait_until(cond: Callable[[], Any], deadline_s: float = 20.0, what: str = "condition") -> Any:
    """Poll ``cond`` until it returns something true; its value. AssertionError naming ``what`` at the
    deadline."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"{what}: not within {deadline_s} s")
