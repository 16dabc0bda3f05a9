"""Progress lines for the long steps of a job: ``[offers 2/4] fitting the uplift model (1,234 rows)``, then
the step's time when the next one starts, so a user watching ``personalise train`` sees where it is."""

from __future__ import annotations

import logging
import time
from types import TracebackType


class Steps:
    """Numbered steps of one part of a job, logged at INFO on ``logger``.

    >>> with Steps("refit", 3, logging.getLogger("x")) as steps:   # doctest: +SKIP
    ...     steps.next("recommenders")
    """

    def __init__(self, part: str, total: int, logger: logging.Logger) -> None:
        self.part, self.total, self.log = part, total, logger
        self.done = 0
        self._name: str | None = None
        self._t0 = 0.0

    def next(self, name: str) -> None:
        """Finish the running step (its time is logged) and start ``name``."""
        self._finish()
        self.done += 1
        self._name, self._t0 = name, time.perf_counter()
        self.log.info("[%s %d/%d] %s", self.part, self.done, self.total, name)

    def _finish(self) -> None:
        if self._name is not None:
            self.log.info("[%s %d/%d] %s: done in %.1f s", self.part, self.done, self.total, self._name,
                          time.perf_counter() - self._t0)
            self._name = None

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self._finish()
