"""Batch scoring: every customer scored by the champion models, written as Parquet for the CRM engine and
serving.

``OUT/customers.parquet``: customer_id, RFM (recency_days, n_orders, net_revenue and their quintile scores
R, F, M), value net of returns, discounts and cost (gross_spend, returns_value, net_revenue, net_margin),
churn (probability of no order in the horizon), predicted_value (net revenue in the horizon), value_tier,
attrition_tier, potential, segment, triggers (active in the 30 days before ``as_of``).
``OUT/recommendations.parquet``: customer_id, product_id, score, rank, reason, source (model | fallback): the
storefront's default answer for every customer.
``OUT/offers.parquet``: customer_id, offer_id (``none`` when no offer is worth its cost), channel,
expected_value (expected incremental margin), group (treatment | control; null for customers without a
purchase, who are not scored), send, reason, trigger, uplift, propensity.
``OUT/_manifest.json``: as_of, engine, the pinned model versions, row counts.

Customers are scored as of ``as_of`` (default: just after the data's last row), with the models' pinned
versions. The ``local`` engine works in pandas, in chunks of customers; the ``spark`` engine
(:mod:`training.spark_scoring`) computes the same rows on a cluster.

Example
-------
>>> r = score("var/demo", "var/scores", engine="local")    # doctest: +SKIP
>>> pd.read_parquet("var/scores/offers.parquet").head()    # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features import schema
from features.customer import customer_features, order_lines
from features.engine import CUSTOMER_ID, ENGINES, ShopFacts, drop_context, feature_table, read_feature_table
from features.io import Shop, load_shop
from models.segments import rfm_scores, segment_customers
from models.triggers import detect_triggers
from training.scoring_models import SCORE_COLUMN, Champion, resolve_champion

log = logging.getLogger(__name__)

CUSTOMER_COLUMNS = [schema.CUSTOMER_ID, "recency_days", "n_orders", "net_revenue", "R",
                    "F", "M", "gross_spend", "returns_value", "net_margin", "churn", "predicted_value",
                    "value_tier", "attrition_tier", "potential", "segment", "triggers"]
RECOMMENDATION_COLUMNS = [schema.CUSTOMER_ID, schema.PRODUCT_ID, "score", "rank", "reason", "source"]
OFFER_COLUMNS = [schema.CUSTOMER_ID, schema.OFFER_ID, "channel", "expected_value", "group", "send",
                 "reason", "trigger", "uplift", "propensity"]
SEGMENT_INPUTS = ["n_orders", "recency_days", "net_revenue", "net_margin", "tenure_days"]
TRIGGER_DAYS = 30
NO_POLICY = "no offer policy (no offer history or catalogue)"


@dataclass(frozen=True)
class ScoreConfig:
    """Settings of one batch scoring run."""

    as_of: str | None = None
    """Score as of this time (default: just after the last row of orders and events)."""
    k: int = 10
    """Recommendations per customer."""
    campaign: str = "default"
    """Campaign id: control-group membership is a hash of campaign and customer."""
    alias: str = "champion"
    chunk: int = 20_000
    """Customers per chunk (local engine)."""
    buckets: int | None = None
    """Customer buckets (Spark engine; default from the data size)."""


@dataclass
class ScoreResult:
    out: str
    engine: str
    as_of: pd.Timestamp
    versions: dict[str, str]
    rows: dict[str, int]
    seconds: float
    manifest: dict[str, Any] = field(default_factory=dict)


# -- the pieces both engines share -------------------------------------------------------------
def segments_frame(narrow: pd.DataFrame, horizon_days: int) -> pd.DataFrame:
    """R, F, M and the segment columns of every customer. ``narrow``: one row per customer of the whole shop
    (quintiles and value tiers are shop-wide) with :data:`SEGMENT_INPUTS`, churn and predicted_value."""
    narrow = narrow.sort_index()
    buyers = narrow[narrow["n_orders"] > 0]
    seg = segment_customers(narrow, buyers["churn"], buyers["predicted_value"], horizon_days)
    return rfm_scores(narrow).astype("Int64").reindex(narrow.index).join(seg)


def active_triggers(shop: Shop, as_of: pd.Timestamp, churn: pd.Series) -> pd.DataFrame:
    """Trigger occurrences in the :data:`TRIGGER_DAYS` before ``as_of`` (churn_risk from ``churn``)."""
    trig = detect_triggers(order_lines(shop, as_of), as_of - pd.Timedelta(days=TRIGGER_DAYS), as_of,
                           churn_now=churn.dropna())
    return drop_context(trig)


def trigger_lists(trig: pd.DataFrame, ids: pd.Index) -> pd.Series:
    """Each customer's distinct triggers, in the order they occurred (empty lists for the others)."""
    lists = (
        trig.drop_duplicates([schema.CUSTOMER_ID, "trigger"])
        .groupby(schema.CUSTOMER_ID, sort=False)["trigger"]
        .agg(list)
    )
    return pd.Series([lists.get(c, []) for c in ids], index=ids, name="triggers", dtype=object)


def offer_rows(policy: Any, table: pd.DataFrame, trig: pd.DataFrame, history: pd.DataFrame | None,
               opted_out: pd.Series, now: pd.Timestamp, campaign: str) -> pd.DataFrame:
    """Next-best offer (or none) of every customer of ``table`` (features, churn, segment): customers with a
    purchase are decided by the policy, as the ``/offers`` API decides them; the others get none."""
    ids = table[CUSTOMER_ID]
    out = pd.DataFrame(
        {
            schema.CUSTOMER_ID: ids.to_numpy(),
            schema.OFFER_ID: "none",
            "channel": None,
            "expected_value": 0.0,
            "group": None,
            "send": False,
            "reason": "no purchase yet",
            "trigger": None,
            "uplift": np.nan,
            "propensity": np.nan,
        }
    ).set_index(schema.CUSTOMER_ID)
    X = read_feature_table(table.drop(columns=["churn", "predicted_value", "segment"]))
    buyers = X[X["n_orders"] > 0]
    if policy is None:
        out.loc[buyers.index, "reason"] = NO_POLICY
    elif len(buyers):
        s = table.set_index(CUSTOMER_ID)
        dec = policy.decide(buyers, s["churn"].reindex(buyers.index), now, campaign=campaign,
                            segments=s["segment"].reindex(buyers.index), history=history,
                            triggers=trig[trig[schema.CUSTOMER_ID].isin(buyers.index)],
                            opted_out=opted_out.reindex(buyers.index)).set_index(schema.CUSTOMER_ID)
        cols = [c for c in OFFER_COLUMNS[1:] if c in dec.columns]
        out.loc[dec.index, cols] = dec[cols].to_numpy()
    out = out.reset_index()
    for c in ("expected_value", "uplift", "propensity"):
        out[c] = pd.to_numeric(out[c]).astype(float)
    out["send"] = out["send"].astype(bool)
    return out[OFFER_COLUMNS]


def recommendation_rows(engine: Any, ids: list[str], regions: list[Any], k: int) -> pd.DataFrame:
    """The storefront's default answer (k items, reasons) for every customer: as the service answers it."""
    rows: list[tuple[Any, ...]] = []
    for cid, reg in zip(ids, regions, strict=True):
        rec = engine.recommend_one(cid, k=k, region=None if reg is None or pd.isna(reg) else str(reg))
        rows += [(cid, it[schema.PRODUCT_ID], float(it["score"]), int(it["rank"]), it["reason"], rec.source)
                 for it in rec.items]
    return pd.DataFrame(rows, columns=RECOMMENDATION_COLUMNS).astype({"score": float, "rank": np.int64})


def customer_rows(table: pd.DataFrame, scores: pd.DataFrame, segments: pd.DataFrame,
                  triggers: pd.Series) -> pd.DataFrame:
    """The customers table: features, scores, segments and trigger lists joined on ``customer_id``."""
    t = table.set_index(CUSTOMER_ID)
    out = t[[c for c in CUSTOMER_COLUMNS if c in t.columns]].join(scores).join(segments.drop(
        columns=[c for c in segments.columns if c in t.columns])).join(triggers.rename("triggers"))
    return out.reset_index()[CUSTOMER_COLUMNS]


# -- the local engine ----------------------------------------------------------------------------
def _score_local(shop: Shop, out: Path, champ: Champion,
                 cfg: ScoreConfig) -> tuple[pd.Timestamp, dict[str, int]]:
    import mlflow.pyfunc
    import pyarrow as pa
    import pyarrow.parquet as pq
    as_of = pd.Timestamp(cfg.as_of) if cfg.as_of else ShopFacts.of(shop).default_cutoff()
    log.info("scoring %d customers as of %s", len(shop.customers), as_of)
    table = feature_table(customer_features(shop, as_of))
    buyers = table[table["n_orders"] > 0]
    scores = pd.DataFrame(index=pd.Index(buyers[CUSTOMER_ID], name=CUSTOMER_ID))
    for comp, col in SCORE_COLUMN.items():
        model = mlflow.pyfunc.load_model(champ.scorer_uris[comp])
        scores[col] = np.concatenate([np.asarray(model.predict(buyers.iloc[a:a + cfg.chunk]), dtype=float)
                                      for a in range(0, len(buyers), cfg.chunk)] or [np.zeros(0)])
    narrow = table.set_index(CUSTOMER_ID)[SEGMENT_INPUTS].join(scores)
    segs = segments_frame(narrow, champ.horizon_days)
    trig = active_triggers(shop, as_of, scores["churn"])
    ids = pd.Index(table[CUSTOMER_ID])
    customers = customer_rows(table, scores, segs, trigger_lists(trig, ids))
    out.mkdir(parents=True, exist_ok=True)
    customers.to_parquet(out / "customers.parquet", index=False)
    scored = table.merge(scores.reset_index(), on=CUSTOMER_ID, how="left").merge(
        segs[["segment"]].reset_index(), on=CUSTOMER_ID, how="left")
    policy = champ.component("offers")["policy"]
    opted = shop.customers.set_index(schema.CUSTOMER_ID)[schema.OPTED_OUT]
    offers = pd.concat([offer_rows(policy, scored.iloc[a:a + cfg.chunk], trig, shop.offer_log, opted, as_of,
                                   cfg.campaign) for a in range(0, len(scored),
                                                                cfg.chunk)], ignore_index=True)
    offers.to_parquet(out / "offers.parquet", index=False)
    engine = champ.component("recommender")["engine"]
    n_recs, writer = 0, None
    for a in range(0, len(table), cfg.chunk):
        part = table.iloc[a:a + cfg.chunk]
        recs = recommendation_rows(engine, part[CUSTOMER_ID].tolist(), part["region"].tolist(), cfg.k)
        at = pa.Table.from_pandas(recs, preserve_index=False)
        writer = writer or pq.ParquetWriter(out / "recommendations.parquet", at.schema)
        writer.write_table(at.cast(writer.schema))
        n_recs += len(recs)
    if writer is not None:
        writer.close()
    return as_of, {"customers": len(customers), "recommendations": n_recs, "offers": len(offers)}


def _tables_dir(data_dir: Path) -> Path:
    return data_dir / "shop" if (data_dir / "shop").is_dir() else data_dir


def score(data_dir: str | Path, out: str, engine: str = "local", config: ScoreConfig | None = None,
          tables: str | None = None, master: str | None = None, spark: Any = None) -> ScoreResult:
    """Score every customer with the pinned ``alias`` models and write the three Parquet tables to ``out``.

    ``data_dir``: the project data directory (its MLflow store, unless MLFLOW_TRACKING_URI is set);
    ``tables``: where the shop tables are (default ``data_dir/shop`` or ``data_dir``; any Hadoop URI for
    Spark). Bad data raises :class:`~features.exceptions.DataValidationError` before any model is loaded.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    cfg = config or ScoreConfig()
    t0 = time.perf_counter()
    src = tables or str(_tables_dir(Path(data_dir)))
    with tempfile.TemporaryDirectory(prefix="personalise-score-") as tmp:
        if engine == "local":
            shop = load_shop(src)  # validated before the registry is touched
            champ = resolve_champion(data_dir, tmp, cfg.alias)
            as_of, rows = _score_local(shop, Path(out), champ, cfg)
        else:
            from training.spark_scoring import score_spark
            as_of, rows, champ = score_spark(data_dir, src, out, cfg, tmp, master=master, spark=spark)
    manifest = {"as_of": str(as_of), "engine": engine, "versions": champ.versions, "rows": rows,
                "config": asdict(cfg), "scored_at": pd.Timestamp.now(tz="UTC").isoformat()}
    _write_manifest(out, manifest)
    secs = time.perf_counter() - t0
    log.info("scored %s in %.1f s: %s", out, secs, rows)
    return ScoreResult(out=out, engine=engine, as_of=as_of, versions=champ.versions, rows=rows, seconds=secs,
                       manifest=manifest)


def _write_manifest(out: str, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=1, default=str)
    if "://" not in out and not out.startswith("dbfs:"):
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "_manifest.json").write_text(text)
        return
    from features.spark_io import write_text
    write_text(f"{out.rstrip('/')}/_manifest.json", text)
