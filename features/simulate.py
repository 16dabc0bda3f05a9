"""A seeded simulator of a whole shop, written in the data contract, with its ground truth.

The simulator plants structure the models must recover and writes it to ``truth/``:

* customers with category tastes, price sensitivity (deal seekers buy only on promotion days),
  return habits (heavy returners send most things back), an individual buying rate and a dropout time
  after which they never buy again (churn);
* a catalogue with categories, brands, prices and costs, replenishable staples people reorder, and
  items going out of stock;
* sessions: views, carts and purchases, abandoned carts, weekly seasonality and a holiday peak;
* offer campaigns sent with a random 10% control group (control rows are logged, nothing is sent);
  the true per-customer uplift of each offer is known, including "sure things" who redeem a coupon
  on an order they would have placed anyway.

Customers are generated in chunks so memory stays bounded at a million customers.

Example
-------
>>> summary = simulate_shop("var/demo/shop", customers=2000, days=365, seed=7)  # doctest: +SKIP
"""

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from features import schema
from features.sim_customers import CustomerChunk
from features.sim_truth import uplift_truth
from features.sim_world import CATEGORIES, OFFERS, START, WINDOW_DAYS, SimConfig, day_weights, make_catalogue

log = logging.getLogger(__name__)


class _Writer:
    """Appends DataFrames to a parquet file chunk by chunk."""

    def __init__(self, path: Path) -> None:
        self.path, self.w = path, None

    def write(self, df: pd.DataFrame) -> None:
        t = pa.Table.from_pandas(df, preserve_index=False)
        if self.w is None:
            self.w = pq.ParquetWriter(self.path, t.schema)
        else:
            t = t.cast(self.w.schema)
        assert self.w is not None
        self.w.write_table(t)

    def close(self) -> None:
        if self.w is not None:
            self.w.close()


def simulate_shop(out: str | Path, customers: int = 20_000, days: int = 365, seed: int = 42,
                  products: int = 2_000, events: bool = True, progress: bool = False,
                  chunk: int = 50_000) -> dict[str, Any]:
    """Write a simulated shop to ``out`` (tables + ``offers.yaml``) and its ground truth to ``out/truth``.

    Returns a summary dict (row counts, seconds). Same seed, same arguments -> identical files.
    """
    t0 = time.perf_counter()
    cfg = SimConfig(customers=customers, products=products, days=days, seed=seed, events=events, chunk=chunk)
    out = Path(out)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    weights, promo = day_weights(days)
    cat = make_catalogue(products, rng, days)
    end_day = float(days)
    end_ts = START + pd.Timedelta(days=days)
    cat.drop(columns=["_cat", "_pop", "_oos_day"]).to_parquet(out / "products.parquet", index=False)
    writers = _open_writers(out)
    counts = {"customers": 0, "orders": 0, "events": 0, "offer_log": 0}
    pid = cat[schema.PRODUCT_ID].to_numpy()
    for lo in _chunk_starts(customers, chunk, progress):
        hi = min(lo + chunk, customers)
        ch = CustomerChunk(cfg, cat, lo, hi, weights, promo)
        cust_df = ch.customers()
        orders, olog, lines, all_lines = _chunk_orders(ch, lo)
        past = all_lines[all_lines["day"] < end_day]
        fut = all_lines[(all_lines["day"] >= end_day) & (all_lines["day"] < end_day + 90)]
        out_orders = _order_table(ch, past, pid)
        writers["orders"].write(out_orders)
        writers["customers"].write(cust_df)
        olog = _offer_log(ch, olog, orders, cfg)
        writers["offer_log"].write(olog[[schema.CUSTOMER_ID, schema.OFFER_ID, schema.CAMPAIGN_ID,
                                         schema.SENT_AT, "channel", "group", schema.REDEEMED_AT,
                                         schema.ORDER_ID, "propensity"]])
        writers["truth_offer_log"].write(olog[[schema.CUSTOMER_ID, schema.CAMPAIGN_ID,
                                               schema.OFFER_ID, "group", "true_uplift", "true_base_p"]])
        if events:
            ev = _event_table(ch, lines, end_day, pid)
            writers["events"].write(ev)
            counts["events"] += len(ev)
        truth, exp_basket, alive_end = _customer_truth(ch, orders, lines, fut, end_day)
        writers["truth_customers"].write(truth)
        writers["truth_uplift"].write(uplift_truth(ch.ids, ch.sens, ch.rate, alive_end, exp_basket, ch.ret))
        counts["customers"] += ch.n
        counts["orders"] += len(out_orders)
        counts["offer_log"] += len(olog)
        log.info("simulated customers %d..%d", lo, hi)
    for w in writers.values():
        w.close()
    if not events:
        (out / "events.parquet").unlink(missing_ok=True)
    _write_catalogue(out, cfg, end_ts)
    summary = {"config": asdict(cfg), "rows": counts, "end": str(end_ts),
               "seconds": round(time.perf_counter() - t0, 2)}
    (out / "truth" / "summary.yaml").write_text(yaml.safe_dump(summary, sort_keys=False))
    return summary


def _chunk_starts(customers: int, chunk: int, progress: bool) -> Any:
    starts = range(0, customers, chunk)
    if progress:
        from tqdm import tqdm
        return tqdm(starts, desc="simulating", unit="chunk")
    return starts


def _open_writers(out: Path) -> dict[str, _Writer]:
    writers = {n: _Writer(out / f"{n}.parquet") for n in ("customers", "orders", "events", "offer_log")}
    writers["truth_customers"] = _Writer(out / "truth" / "customers.parquet")
    writers["truth_uplift"] = _Writer(out / "truth" / "uplift.parquet")
    writers["truth_offer_log"] = _Writer(out / "truth" / "offer_log.parquet")
    return writers


def _write_catalogue(out: Path, cfg: SimConfig, end_ts: pd.Timestamp) -> None:
    """``offers.yaml``: the simulated offers, valid from the start to a year past the end."""
    catalogue = {"offers": [dict(o, valid_from=str(START.date()),
                                 valid_to=str((end_ts + pd.Timedelta(days=365)).date())) for o in OFFERS],
                 "defaults": {"control_share": cfg.control_share, "margin_rate": 0.45}}
    (out / "offers.yaml").write_text(yaml.safe_dump(catalogue, sort_keys=False))


def _chunk_orders(ch: CustomerChunk,
                  lo: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Orders (base and induced by offers, coupons marked), the offer log, purchase lines, and every line
    (returns included) with its net amount and margin."""
    base = ch.base_orders()
    olog, induced, redeemed = ch.campaigns(base)
    base.loc[redeemed["idx"].to_numpy(), "offer"] = redeemed["offer"].to_numpy()
    orders = pd.concat([base, induced], ignore_index=True).sort_values(["cust", "day"], kind="stable")
    orders = orders.reset_index(drop=True)
    orders[schema.ORDER_ID] = [f"O{lo + c:07d}-{k:04d}" for c, k in
                               zip(orders["cust"].to_numpy(),
                                   orders.groupby("cust").cumcount().to_numpy(), strict=True)]
    lines = ch.lines(orders)
    lines[schema.ORDER_ID] = orders[schema.ORDER_ID].to_numpy()[lines["oi"].to_numpy()]
    rets = ch.returns(lines)
    rets[schema.ORDER_ID] = "R" + rets[schema.ORDER_ID].astype(str)
    lines["is_return"] = False
    all_lines = pd.concat([lines, rets], ignore_index=True)
    net = (
        all_lines[schema.QUANTITY] * all_lines["unit_price"]
        - np.sign(all_lines[schema.QUANTITY]) * all_lines["discount"]
    )
    margin = net - all_lines[schema.QUANTITY] * ch.cost[all_lines["prod"].to_numpy()]
    all_lines["net"], all_lines["margin"] = net, margin
    return orders, olog, lines, all_lines


def _order_table(ch: CustomerChunk, past: pd.DataFrame, pid: np.ndarray) -> pd.DataFrame:
    """The order lines before the end, in the contract's columns."""
    return pd.DataFrame({
        schema.ORDER_ID: past[schema.ORDER_ID].to_numpy(),
        schema.CUSTOMER_ID: ch.ids[past["cust"].to_numpy()],
        schema.PRODUCT_ID: pid[past["prod"].to_numpy()],
        "ts": (START + pd.to_timedelta(past["day"].to_numpy(), unit="D")).round("s"),
        schema.QUANTITY: past[schema.QUANTITY].to_numpy(), "unit_price": past["unit_price"].to_numpy(),
        "discount": past["discount"].to_numpy(), "channel": past["channel"].to_numpy(),
    }).sort_values(["ts", schema.ORDER_ID], kind="stable")


def _offer_log(ch: CustomerChunk, olog: pd.DataFrame, orders: pd.DataFrame, cfg: SimConfig) -> pd.DataFrame:
    """The offer log, with redemptions linked to the orders that used the coupon."""
    olog = olog.copy()
    used = orders[orders["offer"].notna()][["cust", "day", "offer", schema.ORDER_ID]]
    olog[schema.SENT_AT] = (START + pd.to_timedelta(olog["sent_day"].to_numpy(), unit="D")).round("s")
    m = olog.reset_index().merge(used, left_on=["cust", schema.OFFER_ID],
                                 right_on=["cust", "offer"], how="left")
    m = m[(m["day"] >= m["sent_day"] - 0.375) & (m["day"] < m["sent_day"] + WINDOW_DAYS)
          & (m["group"] == "treatment")].drop_duplicates("index")
    olog[schema.REDEEMED_AT] = pd.NaT
    olog[schema.ORDER_ID] = None
    olog.loc[m["index"].to_numpy(), schema.REDEEMED_AT] = (
        START + pd.to_timedelta(m["day"].to_numpy(), unit="D")).round("s")
    olog.loc[m["index"].to_numpy(), schema.ORDER_ID] = m[schema.ORDER_ID].to_numpy()
    olog[schema.CUSTOMER_ID] = ch.ids[olog["cust"].to_numpy().astype(int)] if len(olog) else []
    olog["propensity"] = 1 - cfg.control_share
    return olog


def _event_table(ch: CustomerChunk, lines: pd.DataFrame, end_day: float, pid: np.ndarray) -> pd.DataFrame:
    """Browsing events before the end, in the contract's columns."""
    ev = ch.events(lines, end_day)
    ev = ev.sort_values(["day"], kind="stable")
    return pd.DataFrame({
        schema.CUSTOMER_ID: ch.ids[ev["cust"].to_numpy()],
        schema.PRODUCT_ID: pid[ev["prod"].to_numpy()],
        schema.EVENT_TYPE: ev[schema.EVENT_TYPE].to_numpy(),
        "ts": (START + pd.to_timedelta(ev["day"].to_numpy(), unit="D")).round("s"),
        schema.SESSION_ID: ("S" + ev["sess"].astype(str)).to_numpy(),
    })


def _customer_truth(ch: CustomerChunk, orders: pd.DataFrame, lines: pd.DataFrame, fut: pd.DataFrame,
                    end_day: float) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Ground truth per customer (planted traits, 90-day future), expected basket, who is alive at the end."""
    fut_by = fut.groupby("cust").agg(net=("net", "sum"), margin=("margin", "sum"))
    fut_orders = (
        orders[(orders["day"] >= end_day) & (orders["day"] < end_day + 90)].groupby("cust").size()
    )
    idx = np.arange(ch.n)
    basket = (lines.assign(v=lines[schema.QUANTITY] * lines["unit_price"]).groupby("oi")["v"].sum())
    basket_by_cust = basket.groupby(orders["cust"].to_numpy()[basket.index.to_numpy()]).mean()
    exp_basket = basket_by_cust.reindex(idx).fillna(basket.mean() if len(basket) else 30.0).to_numpy()
    alive_end = ch.dropout > end_day
    truth = pd.DataFrame({
        schema.CUSTOMER_ID: ch.ids,
        "top_category": np.array(CATEGORIES, dtype=object)[np.argmax(ch.taste, axis=1)],
        "price_sensitivity": ch.sens, "deal_seeker": ch.deal, "return_rate": ch.ret,
        "heavy_returner": ch.ret > 0.5, "orders_per_year": ch.rate,
        "dropout_at": START + pd.to_timedelta(np.minimum(ch.dropout, 10 * 365), unit="D"),
        "alive_at_end": alive_end,
        "future_orders_90d": fut_orders.reindex(idx).fillna(0).to_numpy().astype(int),
        "future_net_value_90d": fut_by["net"].reindex(idx).fillna(0.0).to_numpy(),
        "future_margin_90d": fut_by["margin"].reindex(idx).fillna(0.0).to_numpy(),
        "expected_basket": exp_basket,
    })
    truth["future_churn_90d"] = truth["future_orders_90d"] == 0
    return truth, exp_basket, alive_end
