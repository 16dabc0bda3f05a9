"""The promotion gate: thresholds as data; a gate metric missing or NaN on the new run fails it."""

from __future__ import annotations

import math

import pytest

from training.gate import DEFAULT_GATE, Threshold, check_gate
from training.jobs import gate_values

AUC = "churn.production.auc"
CHAMPION = {"recommend.all_items.production.ndcg_at_10": 0.30, AUC: 0.75, "value.production.spearman": 0.60}


def test_a_new_run_as_good_as_the_champion_passes() -> None:
    new = {**CHAMPION, AUC: 0.746}  # within the 0.005 tolerance
    r = check_gate(new, CHAMPION, DEFAULT_GATE)
    assert r.ok and r.reason.startswith("not worse than the champion on")


def test_a_worse_run_fails_naming_the_metric() -> None:
    r = check_gate({**CHAMPION, AUC: 0.70}, CHAMPION, DEFAULT_GATE)
    assert not r.ok and r.failures == (f"{AUC} 0.7000 < champion 0.7500 - 0.005",)


@pytest.mark.parametrize("champion", [None, CHAMPION])
def test_a_nan_churn_auc_never_passes(champion: dict[str, float] | None) -> None:
    r = check_gate({**CHAMPION, AUC: math.nan}, champion, DEFAULT_GATE)
    assert not r.ok and r.reason == f"{AUC} is NaN on the new run"


@pytest.mark.parametrize("champion", [None, CHAMPION])
def test_a_missing_gate_metric_never_passes(champion: dict[str, float] | None) -> None:
    new = {k: v for k, v in CHAMPION.items() if k != AUC}
    r = check_gate(new, champion, DEFAULT_GATE)
    assert not r.ok and r.reason == f"{AUC} is missing on the new run"


def test_an_infinite_metric_fails_too() -> None:
    assert not check_gate({**CHAMPION, AUC: math.inf}, None, DEFAULT_GATE).ok


def test_a_champion_without_the_metric_cannot_block_a_measured_run() -> None:
    champ = {k: v for k, v in CHAMPION.items() if k != AUC}
    r = check_gate(CHAMPION, champ, DEFAULT_GATE)
    assert r.ok and f"champion has no {AUC}" in r.reason


def test_lower_is_better_metrics_and_their_tolerance() -> None:
    t = (Threshold("churn.production.brier", "lower", 0.01),)
    assert check_gate({"churn.production.brier": 0.205}, {"churn.production.brier": 0.20}, t).ok
    r = check_gate({"churn.production.brier": 0.25}, {"churn.production.brier": 0.20}, t)
    assert not r.ok and "0.2500 > champion 0.2000 + 0.01" in r.reason


def test_thresholds_are_checked_when_made() -> None:
    with pytest.raises(ValueError, match="direction must be 'higher' or 'lower'"):
        Threshold("x", "up")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tolerance must be >= 0"):
        Threshold("x", "higher", -0.1)


def test_an_auc_the_evaluation_could_not_measure_reaches_the_gate_as_nan() -> None:
    """The report writes an unmeasurable AUC as None (JSON): the train job must hand it to the gate as NaN,
    not leave it out of the comparison as it did."""
    report = {"recommend": {"all_items": {"production": {"ndcg@10": 0.3}}},
              "churn": {"production": {"auc": None}}, "value": {"production": {"spearman": 0.6}}}
    new = gate_values(report, DEFAULT_GATE)
    assert math.isnan(new[AUC]) and new["recommend.all_items.production.ndcg_at_10"] == 0.3
    assert not check_gate(new, CHAMPION, DEFAULT_GATE).ok


def test_an_unevaluated_component_is_not_gated_and_keeps_an_evaluated_champion() -> None:
    """A component the evaluation could not run (not a NaN of one it ran) is left out of the gate; its
    champion version stays when that champion was evaluated, else the new version is promoted - both
    decisions say why."""
    from training.gate import component_of, unevaluated_decisions
    new = {k: v for k, v in CHAMPION.items() if component_of(k) != "churn"}
    why = {"churn": "a 90-day holdout does not fit in 59 days of orders"}
    r = check_gate(new, CHAMPION, DEFAULT_GATE, unevaluated=why)
    assert r.ok and r.unevaluated == ("churn",) and "churn not evaluated" in r.reason
    assert not check_gate({**new, "value.production.spearman": 0.5}, CHAMPION, DEFAULT_GATE, why).ok
    kept = unevaluated_decisions(why, DEFAULT_GATE, CHAMPION, {"churn": "3", "value": "3"})
    assert kept["churn"][0] is False and "kept the champion's version 3" in kept["churn"][1]
    assert f"{AUC} 0.7500" in kept["churn"][1]
    for champ, versions in ((None, {}), ({k: v for k, v in CHAMPION.items() if k != AUC}, {"churn": "3"})):
        go, reason = unevaluated_decisions(why, DEFAULT_GATE, champ, versions)["churn"]
        assert go and reason.startswith("churn: promoted without evaluation (a 90-day holdout")
    # a NaN on a component that was evaluated still fails
    assert not check_gate({**CHAMPION, AUC: math.nan}, CHAMPION, DEFAULT_GATE, {"value": "x"}).ok
