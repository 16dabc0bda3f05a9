"""Independent parts of the train job at the same time: really at once, results in order, errors raised
after every part ended, stage paths and context variables carried into the threads."""

from __future__ import annotations

import contextvars
import threading

import pytest

from training.concurrency import together
from training.stages import StageTimer, stage

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("test_concurrency_var", default="unset")


def test_the_parts_run_at_the_same_time_and_return_in_order() -> None:
    meet = threading.Barrier(2, timeout=10)  # broken (an error) unless both parts wait at once

    def part(x: int) -> tuple[int, str]:
        meet.wait()
        return x, threading.current_thread().name

    (a, ta), (b, tb) = together([lambda: part(1), lambda: part(2)], concurrent=True)
    assert (a, b) == (1, 2) and ta != tb


def test_not_concurrent_runs_them_one_after_the_other_in_this_thread() -> None:
    order: list[str] = []
    me = threading.current_thread().name
    out = together([lambda: order.append(threading.current_thread().name) or 1,
                    lambda: order.append(threading.current_thread().name) or 2], concurrent=False)
    assert out == [1, 2] and order == [me, me]


def test_an_error_is_raised_after_the_other_part_ended() -> None:
    ended = threading.Event()
    started = threading.Event()

    def slow() -> int:
        started.set()
        ended.wait(0.3)  # still running when the first part fails
        ended.set()
        return 1

    def fails() -> int:
        assert started.wait(10)
        raise ValueError("first part")

    with pytest.raises(ValueError, match="first part"):
        together([fails, slow], concurrent=True)
    assert ended.is_set()


def test_stage_paths_and_context_variables_are_carried_into_the_threads() -> None:
    token = VAR.set("job")
    seen: list[str] = []
    try:
        with StageTimer(interval=0.005) as timer, stage("evaluation"):
            def part(name: str) -> None:
                seen.append(VAR.get())
                with stage(name):
                    pass
            together([lambda: part("recommenders"), lambda: part("customer models")], concurrent=True)
    finally:
        VAR.reset(token)
    paths = {r["stage"] for r in timer.rows()}
    assert paths == {"evaluation", "evaluation/recommenders", "evaluation/customer models"}
    assert seen == ["job", "job"]
