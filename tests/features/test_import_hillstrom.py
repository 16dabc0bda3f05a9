"""Hillstrom importer: the shared control, outcomes as orders, attributes; exact row accounting on an excerpt
and on the real file."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from features.importers import import_hillstrom
from features.io import load_shop
from models.offers import parse_catalogue
from tests.conftest import SHARED

HEADER = "recency,history_segment,history,mens,womens,zip_code,newbie,channel,segment,visit,conversion,spend"
EXCERPT = HEADER + """\r
10,2) $100 - $200,142.44,1,0,Surburban,0,Phone,Womens E-Mail,0,0,0\r
6,3) $200 - $350,329.08,1,1,Rural,1,Web,No E-Mail,1,1,29.99\r
7,2) $100 - $200,180.65,0,1,Surburban,1,Web,Womens E-Mail,1,1,120.5\r
9,5) $500 - $750,675.83,1,0,Rural,1,Web,Mens E-Mail,0,0,0\r
1,"6) $750 - $1,000",800.00,1,0,Urban,0,Multichannel,Mens E-Mail,1,0,0\r
"""


def test_excerpt_accounting_and_shared_control(tmp_path: Path) -> None:
    src = tmp_path / "hillstrom.csv.gz"
    with gzip.open(src, "wt", newline="") as f:
        f.write(EXCERPT)
    r = import_hillstrom(src, tmp_path / "out", send_cost=0.02)
    assert r.input_rows == r.kept_rows == 5 and r.dropped == {}
    assert r.tables == {"customers": 5, "orders": 2, "products": 1, "offer_log": 6}
    assert r.details["visits_not_written"] == 3
    shop = load_shop(tmp_path / "out")
    assert shop.report.ok
    log = shop.offer_log.sort_values(["customer_id", "offer_id"])
    assert log[["customer_id", "offer_id", "group"]].values.tolist() == [
        ["H00001", "hillstrom_womens", "treatment"],
        # one control, both e-mails
        ["H00002", "hillstrom_mens", "control"], ["H00002", "hillstrom_womens", "control"],
        ["H00003", "hillstrom_womens", "treatment"], ["H00004", "hillstrom_mens", "treatment"],
        ["H00005", "hillstrom_mens", "treatment"]]
    assert (log["sent_at"] == pd.Timestamp("2008-03-01")).all() and (log["channel"] == "email").all()
    o = shop.orders.set_index("customer_id")
    assert o["unit_price"].to_dict() == {"H00002": 29.99, "H00003": 120.5}
    assert (o["ts"] == pd.Timestamp("2008-03-08")).all() and (o["quantity"] == 1).all()
    c = shop.customers.set_index("customer_id")
    assert shop.attributes["history_segment"] == "categorical" and shop.attributes["newbie"] == "boolean"
    assert c.loc["H00005", "history_segment"] == "6) $750 - $1,000" and c.loc["H00004", "history"] == 675.83
    assert c.loc["H00002", "mens"] == True  # noqa: E712 (pandas boolean)
    assert c.loc["H00001", "womens"] == False  # noqa: E712
    cat = parse_catalogue(shop.offers)
    assert cat.ids == ["hillstrom_mens", "hillstrom_womens"]
    assert cat.get("hillstrom_mens").cost_per_send == {"email": 0.02} and cat.margin_rate == 0.45


def test_not_the_hillstrom_file_is_named(tmp_path: Path) -> None:
    src = tmp_path / "hillstrom.csv.gz"
    with gzip.open(src, "wt") as f:
        f.write(EXCERPT.replace("Womens E-Mail", "SMS"))
    with pytest.raises(ValueError, match="2 rows have an arm outside"):
        import_hillstrom(src, tmp_path / "out")


@pytest.mark.realdata
def test_real_file_row_accounting(tmp_path: Path) -> None:
    r = import_hillstrom(SHARED / "hillstrom", tmp_path)
    raw = pd.read_csv(SHARED / "hillstrom" / "hillstrom.csv.gz")
    assert r.input_rows == len(raw) == 64_000 == r.tables["customers"]
    arms = raw["segment"].value_counts()
    assert r.details["arms"] == {"Mens E-Mail": 21_307, "Womens E-Mail": 21_387, "No E-Mail": 21_306}
    shop = load_shop(tmp_path)
    assert shop.report.ok and set(shop.attributes) == {"history_segment", "history",
                                                       "recency", "mens", "womens", "zip_code",
                                                       "newbie", "channel"}
    # offer_log: one treatment row per e-mailed customer, one control row per e-mail per control customer
    log = shop.offer_log
    assert len(log) == arms["Mens E-Mail"] + arms["Womens E-Mail"] + 2 * arms["No E-Mail"] == 85_306
    per = log.groupby(["offer_id", "group"]).size().to_dict()
    assert per == {("hillstrom_mens", "treatment"): 21_307, ("hillstrom_womens", "treatment"): 21_387,
                   ("hillstrom_mens", "control"): 21_306, ("hillstrom_womens", "control"): 21_306}
    assert log["customer_id"].nunique() == 64_000
    # outcomes: one order per buyer, spend kept to the cent, per arm as the README's table
    assert len(shop.orders) == (raw["spend"] > 0).sum() == raw["conversion"].sum() == 578
    assert round(shop.orders["unit_price"].sum(), 2) == round(raw["spend"].sum(), 2) == 67_258.13
    arm_of = pd.Series(raw["segment"].to_numpy(), index=[f"H{i:05d}" for i in range(1, 64_001)])
    assert shop.orders["customer_id"].map(arm_of).value_counts().to_dict() == {
        "Mens E-Mail": 267, "Womens E-Mail": 189, "No E-Mail": 122}
    # pre-period history is attributes only: no order line before the send
    assert (shop.orders["ts"] > log["sent_at"].max()).all()
    c = shop.customers.set_index("customer_id")
    assert c["history"].sum() == pytest.approx(raw["history"].sum())
    assert c["history_segment"].nunique() == 7 and c["recency"].between(1, 12).all()
    # measured uplift counts the shared control once per customer (21,306 customers, not one row per e-mail)
    from models.offers import measure_uplift
    from training.offer_eval import uplift_training_set
    _, y = uplift_training_set(shop)
    group = y["treated"].map({True: "treatment", False: "control"})
    conv = y.assign(converted=y["bought"].astype(int), group=group)
    m = measure_uplift(conv).iloc[0]
    assert (m["treated"], m["control"]) == (42_694, 21_306)
    assert m["rate_control"] == pytest.approx(122 / 21_306)
    assert m["rate_treated"] == pytest.approx(456 / 42_694)
