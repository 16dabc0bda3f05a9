"""Wall time and peak memory per stage of a long job, so the next bottleneck is visible.

A job marks its stages with ``with stage("features"):``; stages nest (``evaluation/recommenders/re-ranker``).
Outside a :class:`StageTimer` a stage only logs its time, so jobs can call it unconditionally. Inside one,
a sampling thread reads the process's resident memory (RSS) every ``interval`` seconds and the timer keeps,
per stage path, the calls, the wall time (inclusive and exclusive of nested stages) and the peak RSS seen
while that stage was the innermost one.

Code that cannot be edited (another module's function) is timed from outside with :meth:`StageTimer.wrap`,
which replaces the function wherever it was imported and puts it back on exit.

Example
-------
>>> with StageTimer() as timer:                       # doctest: +SKIP
...     with stage("load"):
...         shop = load_shop(path)
>>> timer.table()                                      # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
_ACTIVE: list[StageTimer] = []
PACKAGES = ("features", "models", "training", "serving", "personalise_cli", "bench")
"""Modules whose imported names :meth:`StageTimer.wrap` replaces."""


def rss_mb() -> float:
    """Resident memory of this process in MB (from /proc; psutil where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import psutil
        return float(psutil.Process().memory_info().rss / 2**20)


@dataclass
class StageRecord:
    """What one stage path cost, over all its calls."""

    path: tuple[str, ...]
    calls: int = 0
    seconds: float = 0.0
    """Wall time, nested stages included."""
    own_seconds: float = 0.0
    """Wall time spent in this stage itself (nested stages excluded)."""
    own_cpu_seconds: float = 0.0
    """CPU time of the process (all threads) in this stage itself: steadier than wall time on a shared
    machine."""
    peak_rss_mb: float = 0.0
    """Largest RSS sampled while this stage was the innermost one."""
    first_start: float | None = None
    """Seconds from the timer's start to this stage's first call (with :attr:`last_end`: a timeline, to see
    which stages ran at the same time)."""
    last_end: float = 0.0
    """Seconds from the timer's start to the end of this stage's last call."""

    @property
    def name(self) -> str:
        return "/".join(self.path)


@dataclass
class _Frame:
    """A running stage: its path, when it started, and the time its nested stages took."""

    path: tuple[str, ...]
    wall: float
    cpu: float
    nested_wall: float = 0.0
    nested_cpu: float = 0.0


class StageTimer:
    """Collects :class:`StageRecord` per stage path while active (a context manager)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.records: dict[tuple[str, ...], StageRecord] = {}
        self.peak_rss_mb = 0.0
        self._local = threading.local()
        self._stacks: dict[int, list[_Frame]] = {}
        """Each thread's running stages (a thread started by :func:`carried` continues its starter's path)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._restore: list[tuple[Any, str, Any]] = []
        self.t0 = 0.0

    # -- activation -------------------------------------------------------------------------------
    def __enter__(self) -> StageTimer:
        self.t0 = time.perf_counter()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="stage-rss", daemon=True)
        self._thread.start()
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        _ACTIVE.remove(self)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.unwrap()
        self.total_seconds = time.perf_counter() - self.t0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._note(rss_mb())
            self._stop.wait(self.interval)

    def _note(self, mb: float) -> None:
        self.peak_rss_mb = max(self.peak_rss_mb, mb)
        for stack in list(self._stacks.values()):
            frame = stack[-1] if stack else None
            rec = self.records.get(frame.path) if frame is not None else None
            if rec is not None:
                rec.peak_rss_mb = max(rec.peak_rss_mb, mb)

    @property
    def _stack(self) -> list[_Frame]:
        """This thread's running stages."""
        stack: list[_Frame] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
            self._stacks[threading.get_ident()] = stack
        return stack

    def path(self) -> tuple[str, ...]:
        """The path of this thread's innermost running stage (or the one it continues)."""
        stack = self._stack
        return stack[-1].path if stack else getattr(self._local, "base", ())

    # -- stages -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        stack = self._stack
        path = (*self.path(), name)
        frame = _Frame(path, time.perf_counter(), time.process_time())
        with self._lock:
            rec = self.records.setdefault(path, StageRecord(path))
            rec.calls += 1
            if rec.first_start is None:
                rec.first_start = frame.wall - self.t0
        stack.append(frame)
        self._note(rss_mb())
        try:
            yield
        finally:
            self._note(rss_mb())
            stack.pop()
            took, cpu = time.perf_counter() - frame.wall, time.process_time() - frame.cpu
            with self._lock:
                rec.seconds += took
                rec.own_seconds += took - frame.nested_wall
                rec.own_cpu_seconds += cpu - frame.nested_cpu
                rec.last_end = frame.wall + took - self.t0
            if stack:
                stack[-1].nested_wall += took
                stack[-1].nested_cpu += cpu

    def wrap(self, target: Callable[..., Any], name: str, owner: Any = None) -> None:
        """Time every call of ``target`` as stage ``name``. A function is replaced in every loaded module of
        :data:`PACKAGES` that holds it; a method needs its class as ``owner``. Undone by :meth:`unwrap` (and
        on exit)."""
        @functools.wraps(target)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name):
                return target(*args, **kwargs)
        if owner is not None:
            attr = target.__name__
            self._restore.append((owner, attr, owner.__dict__[attr]))
            setattr(owner, attr, timed)
            return
        for mod in list(sys.modules.values()):
            mname = getattr(mod, "__name__", "") or ""
            if mname.split(".")[0] not in PACKAGES:
                continue
            for attr, val in list(vars(mod).items()):
                if val is target:
                    self._restore.append((mod, attr, val))
                    setattr(mod, attr, timed)

    def unwrap(self) -> None:
        for owner, attr, val in reversed(self._restore):
            setattr(owner, attr, val)
        self._restore.clear()

    # -- results ----------------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """One dict per stage path, in first-call order."""
        return [{"stage": r.name, "calls": r.calls, "seconds": round(r.seconds, 2),
                 "own_seconds": round(r.own_seconds, 2), "own_cpu_seconds": round(r.own_cpu_seconds, 2),
                 "peak_rss_mb": round(r.peak_rss_mb, 1), "start": round(r.first_start or 0.0, 1),
                 "end": round(r.last_end, 1)}
                for r in self.records.values()]

    def by_leaf(self) -> list[dict[str, Any]]:
        """Own time and peak memory per stage name, wherever it was nested (e.g. every ``features`` call)."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.records.values():
            d = out.setdefault(r.path[-1], {"stage": r.path[-1], "calls": 0, "own_seconds": 0.0,
                                            "own_cpu_seconds": 0.0, "peak_rss_mb": 0.0})
            d["calls"] += r.calls
            d["own_seconds"] += r.own_seconds
            d["own_cpu_seconds"] += r.own_cpu_seconds
            d["peak_rss_mb"] = max(d["peak_rss_mb"], r.peak_rss_mb)
        return [{**d, "own_seconds": round(d["own_seconds"], 2),
                 "own_cpu_seconds": round(d["own_cpu_seconds"], 2)}
                for d in out.values()]


def carried(fn: Callable[[], T]) -> Callable[[], T]:
    """``fn``, to be called in another thread, whose stages continue the calling thread's current stage
    path (``evaluation/recommenders`` rather than a new ``recommenders`` at the top). Stages running at the
    same time overlap: each one's wall and CPU seconds include the other's, so per-stage times are only
    separable when stages run one after the other (the process's total is right either way)."""
    timer = _ACTIVE[-1] if _ACTIVE else None
    if timer is None:
        return fn
    base = timer.path()

    def run() -> T:
        local = timer._local
        saved = getattr(local, "base", ())
        local.base = base
        try:
            return fn()
        finally:
            local.base = saved
    return run


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Mark a stage of a job: recorded by the active :class:`StageTimer` (if any) and logged."""
    t0 = time.perf_counter()
    timer = _ACTIVE[-1] if _ACTIVE else None
    with timer.stage(name) if timer is not None else contextlib.nullcontext():
        yield
    log.info("stage %s: %.1f s, RSS %.0f MB", name, time.perf_counter() - t0, rss_mb())
