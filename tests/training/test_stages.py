"""The stage timer: nested stages, own time counted once, peak memory seen, functions timed from outside."""

from __future__ import annotations

import time

import numpy as np

import features.customer
import training.customer_eval
from training.stages import StageTimer, rss_mb, stage


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_nested_stages_count_their_own_time_once() -> None:
    with StageTimer(interval=0.005) as timer:
        with stage("outer"):
            _busy(0.05)
            with stage("inner"):
                _busy(0.1)
            with stage("inner"):
                _busy(0.1)
    rec = {r["stage"]: r for r in timer.rows()}
    assert set(rec) == {"outer", "outer/inner"}
    assert rec["outer/inner"]["calls"] == 2
    assert rec["outer"]["seconds"] >= rec["outer/inner"]["seconds"] >= 0.2
    assert abs(rec["outer"]["own_seconds"] - (rec["outer"]["seconds"] - rec["outer/inner"]["seconds"])) < 0.01
    assert rec["outer/inner"]["own_cpu_seconds"] > 0


def test_each_stage_knows_when_it_first_started_and_last_ended() -> None:
    with StageTimer(interval=0.005) as timer:
        _busy(0.03)
        with stage("a"):
            _busy(0.05)
        with stage("b"):
            _busy(0.05)
        with stage("a"):
            _busy(0.02)
    a, b = timer.records[("a",)], timer.records[("b",)]
    assert a.first_start is not None and b.first_start is not None
    assert 0.03 <= a.first_start < b.first_start < b.last_end < a.last_end <= timer.total_seconds
    assert b.last_end - b.first_start >= 0.05
    assert a.last_end - a.first_start >= 0.12
    assert {"start", "end"} <= set(timer.rows()[0])


def test_peak_memory_belongs_to_the_stage_that_allocated() -> None:
    with StageTimer(interval=0.002) as timer:
        with stage("small"):
            _busy(0.02)
        with stage("big"):
            a = np.ones(300 * 2**20 // 8)  # 300 MB, touched
            _busy(0.05)
            del a
    rec = {r["stage"]: r for r in timer.rows()}
    assert rec["big"]["peak_rss_mb"] > rec["small"]["peak_rss_mb"] + 200
    assert timer.peak_rss_mb >= rec["big"]["peak_rss_mb"] - 0.1  # rows() rounds to 0.1 MB
    assert rss_mb() < rec["big"]["peak_rss_mb"]


def test_wrap_times_a_function_wherever_it_was_imported_and_unwraps() -> None:
    original = features.customer.customer_features
    with StageTimer() as timer:
        timer.wrap(original, "features")
        assert features.customer.customer_features is not original
        # its import too
        assert training.customer_eval.customer_features is features.customer.customer_features
        with stage("job"):
            try:
                features.customer.customer_features(None, None)  # type: ignore[arg-type]
            except AttributeError:
                pass  # no shop: the call fails, the stage is still recorded
    assert features.customer.customer_features is original
    assert training.customer_eval.customer_features is original
    assert [r["stage"] for r in timer.rows()] == ["job", "job/features"]


def test_stage_outside_a_timer_only_logs(caplog) -> None:
    caplog.set_level("INFO", logger="training.stages")
    with stage("alone"):
        pass
    assert "stage alone" in caplog.text
