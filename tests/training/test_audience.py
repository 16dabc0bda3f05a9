"""The ``offers audience`` job counts the sends already recorded in the live store (caps, cooldowns)."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pandas as pd
import pytest

from features import schema
from features.live import DECISIONS, LiveStore, default_url
from training.audience import build_audience
from training.jobs import TrainResult

pytestmark = pytest.mark.slow


@pytest.fixture
def project(trained_project: tuple[Path, TrainResult], tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the trained project (its live store is written here, the shared project has none)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("PERSONALISE_DB", raising=False)
    copy = tmp_path / "project"
    shutil.copytree(trained_project[0], copy)
    return copy


def pairs(audience: pd.DataFrame) -> set[tuple[str, str]]:
    t = audience[audience[schema.GROUP] == "treatment"]
    return set(zip(t[schema.CUSTOMER_ID], t[schema.OFFER_ID], strict=True))


def test_the_audience_respects_sends_already_in_the_live_store(project: Path) -> None:
    store = LiveStore(default_url(project))
    now = pd.Timestamp("2026-01-02")  # one day after the small shop's data end: the offers are valid
    first = build_audience(project, budget=1e6, channel="email", now=now)
    assert first.history_sends == 0 and len(pairs(first.audience)) > 50
    again = build_audience(project, budget=1e6, channel="email", now=now)
    assert pairs(again.audience) == pairs(first.audience)  # nothing recorded: the same contacts again
    sent = first.audience[first.audience[schema.GROUP] == "treatment"]
    at = (now - pd.Timedelta(hours=12)).to_pydatetime()
    with store.engine.begin() as conn:  # what the service logged when these offers went out this morning
        conn.execute(DECISIONS.insert(), [{"customer_id": r.customer_id, "offer_id": r.offer_id,
                                           "channel": "email", "group": "treatment", "campaign_id": "live",
                                           "decided_at": at} for r in sent.itertuples()])
    after = build_audience(project, budget=1e6, channel="email", now=now)
    assert after.history_sends == len(sent)
    assert not pairs(after.audience) & pairs(first.audience)  # every offer's cooldown is at least 14 days


def test_cli_audience_writes_the_file_and_records_it_when_asked(project: Path, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from personalise_cli import app
    out = tmp_path / "audience.csv"
    res = CliRunner().invoke(app, ["offers", "audience", "--data", str(project), "--budget", "5", "--channel",
                                   "email", "--out", str(out), "--record", "--now", "2026-01-02"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.rindex('{"contacts"'):])  # after MLflow's progress bars
    written = pd.read_csv(out)
    assert summary["contacts"] == int((written[schema.GROUP] == "treatment").sum()) > 0
    assert summary["cost"] <= 5 and summary["recorded"] == len(written)
    logged = LiveStore(default_url(project)).decisions(since=dt.datetime(2000, 1, 1))
    assert len(logged) == len(written) and set(logged[schema.CAMPAIGN_ID]) == {"campaign"}
