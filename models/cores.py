"""How many cores a computation may use now: all of them, less one for each other part of the job running at
the same time (:func:`training.concurrency.together`).

Two parts of the train job run side by side on two threads; each part's own parallel work (LightGBM's and
implicit's OpenMP teams, batches scored on several threads) would otherwise ask for every core too: four
busy threads on two cores, and OpenMP threads that spin while they wait for each other. So while another
part runs, a part's parallel work gets the cores left (one of two); once the other part has ended, it gets
them all again, from its next fit or batch of batches on. Results never depend on the number of threads
(every such computation is deterministic in it, and tested so): only the speed does.

Example
-------
>>> free_threads(2)
2
>>> with part_running(), part_running():   # two parts at once
...     free_threads(2)
1
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_LOCK = threading.Lock()
_running = 0
"""Parts of the job running now (0 or 1: the job alone)."""


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextmanager
def part_running() -> Iterator[None]:
    """Count a part of the job as running while inside."""
    global _running
    with _LOCK:
        _running += 1
    try:
        yield
    finally:
        with _LOCK:
            _running -= 1


def free_threads(wanted: int) -> int:
    """``wanted`` threads (0 or less: every core), at most the cores not taken by the other parts running
    now, and at least one."""
    n = cores()
    wanted = n if wanted <= 0 else wanted
    return max(1, min(wanted, n - max(_running - 1, 0)))
