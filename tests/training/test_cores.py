"""While two parts of the train job run at once, each one's parallel work gets the cores left; once the other
has ended, every core again (models.cores, training.concurrency.together)."""

from __future__ import annotations

import threading
import time

from models.cores import cores, free_threads
from models.recsys.threads import in_threads
from training.concurrency import together


def _wait_for(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_a_part_gets_the_cores_left_while_another_runs_and_all_after() -> None:
    both = threading.Barrier(2, timeout=10)
    second_done = threading.Event()
    seen: dict[str, int] = {}

    def first() -> None:
        both.wait()
        seen["together"] = free_threads(0)
        seen["asked_one"] = free_threads(1)
        second_done.wait(10)
        assert _wait_for(lambda: free_threads(0) == cores())  # the second part has left the count
        seen["after"] = free_threads(0)

    def second() -> None:
        both.wait()
        seen["second"] = free_threads(2)
        second_done.set()

    together([first, second], concurrent=True)
    assert seen["together"] == max(1, cores() - 1)
    assert seen["second"] == min(2, max(1, cores() - 1))
    assert seen["asked_one"] == 1
    assert seen["after"] == cores()
    assert free_threads(0) == cores()  # nothing counted once the parts have ended


def test_parts_one_after_the_other_take_every_core_and_in_threads_gives_the_same_results() -> None:
    seen = together([lambda: free_threads(0), lambda: free_threads(0)], concurrent=False)
    assert seen == [cores(), cores()]
    squares = in_threads(lambda a: a * a, list(range(10)), threads=2)
    inside = together([lambda: in_threads(lambda a: a * a, list(range(10)), threads=2),
                       lambda: in_threads(lambda a: a + 1, list(range(10)), threads=2)], concurrent=True)
    assert inside[0] == squares and inside[1] == [a + 1 for a in range(10)]
