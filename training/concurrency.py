"""Independent parts of the train job run at the same time, on the machine's two cores.

Most of a train is work that releases Python's lock while it runs (LightGBM's and implicit's fits, numpy,
scipy's sparse products), and no part uses both cores all the time (the evaluation's recommenders about
1.4 of them, churn and value's data preparation one). Two parts that share no result can therefore run
side by side in threads: each computes exactly what it computes alone (no shared random state: every
seed is passed explicitly; the shop's caches are filled before, or computed the same way by either
thread), only at the same time. The threads see the job's context variables (the training frames'
source, :func:`training.frames.using`). While both run, each part's own parallel work (OpenMP teams,
batches scored on several threads) takes one core, and every core again once the other has ended
(:mod:`models.cores`). The price is memory: both parts' working sets at once.

Example
-------
>>> together([lambda: 1 + 1, lambda: 2 * 3], concurrent=True)
[2, 6]
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from models.cores import part_running
from models.recsys.threads import release_freed_memory
from training.stages import carried


def together(tasks: Sequence[Callable[[], Any]], concurrent: bool = True) -> list[Any]:
    """``[t() for t in tasks]``: with ``concurrent``, the first in this thread and each other one in a
    thread of its own, all at once (their stages continue this thread's stage path); otherwise one after
    the other. Results in the order of ``tasks``; when any raises, the others are waited for and the first
    task's exception (in ``tasks``' order) is raised."""
    if not concurrent or len(tasks) <= 1:
        return [t() for t in tasks]
    # while another part runs, each part's own parallel work gets the cores left (models.cores)
    tasks = [_counted(t) for t in tasks]
    try:
        with ThreadPoolExecutor(max_workers=len(tasks) - 1, thread_name_prefix="train-part") as pool:
            # each in a copy of this thread's context: the job's context variables (the training frames'
            # source, training.frames.using) hold there too
            futures = [pool.submit(contextvars.copy_context().run, carried(t)) for t in tasks[1:]]
            first: Any = None
            error: BaseException | None = None
            try:
                first = tasks[0]()
            except BaseException as e:  # the others still run to their end before it is raised
                error = e
            rest = []
            for f in futures:
                try:
                    rest.append(f.result())
                except BaseException as e:
                    error = error or e
            if error is not None:
                raise error
            return [first, *rest]
    finally:
        release_freed_memory()


def _counted(task: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        with part_running():
            return task()
    return run
