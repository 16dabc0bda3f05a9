"""Long steps say where they are: numbered progress lines with each step's time."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from training.progress import Steps


def test_steps_are_numbered_and_each_finished_step_logs_its_time(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.progress")
    with caplog.at_level(logging.INFO, logger="test.progress"), Steps("refit", 2, log) as steps:
        steps.next("one")
        steps.next("two")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "[refit 1/2] one" and lines[2] == "[refit 2/2] two"
    assert lines[1].startswith("[refit 1/2] one: done in ")
    assert lines[3].startswith("[refit 2/2] two: done in ")


def test_a_failed_step_is_not_reported_done(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.progress")
    with caplog.at_level(logging.INFO, logger="test.progress"), pytest.raises(ValueError):
        with Steps("offers", 3, log) as steps:
            steps.next("fitting")
            raise ValueError("boom")
    assert [r.getMessage() for r in caplog.records] == ["[offers 1/3] fitting"]


@pytest.mark.slow
def test_the_offers_evaluation_shows_its_steps(small_shop, caplog: pytest.LogCaptureFixture) -> None:
    from training.offer_eval import evaluate_offers
    cutoff = small_shop.end - pd.Timedelta(days=60)
    with caplog.at_level(logging.INFO, logger="training.offer_eval"):
        evaluate_offers(small_shop, cutoff)
    started = [r.getMessage() for r in caplog.records if "done in" not in r.getMessage()
               and r.getMessage().startswith("[offers")]
    assert [s.split("]")[0] for s in started] == ["[offers 1/3", "[offers 2/3", "[offers 3/3"]
