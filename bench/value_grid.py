"""The value and churn grid: dataset x horizon (x cutoff) x model, written to bench/VALUE_GRID.md.

Value: Spearman and normalised Gini of each model's predicted spend against the spend in the H days after
the cutoff (customers with a purchase before it): production (LightGBM Tweedie on stacked windows, or its
BG/NBD + Gamma-Gamma fallback when the history is too short), last-period spend, the historical rate and
BG/NBD + Gamma-Gamma. Churn: AUC of production, BG/NBD P(no purchase in H) and recency.

Where the stacked windows of H fit, production's value is the stacked model alone or its blend with the naive
baselines, chosen on a validation window before the cutoff (:mod:`training.value_choice`; the column
``production model`` names the window). Where the history is too short for them, production is the candidate
chosen by the service on a validation window before the cutoff (:mod:`training.customer_selection`: LightGBM
on shorter label windows scaled to H, BG/NBD + Gamma-Gamma, last-period spend or the historical rate);
``production before`` is the same cell run on the code before that choice existed (BG/NBD + Gamma-Gamma
there), read from ``bench/value_grid_before.json`` (written by this script run on that code, then copied).
``Changed since the previous grid``: the cells whose production value or churn moved against
``bench/value_grid_previous.json`` (the grid as committed before the latest change to the choice, copied from
git by hand).

``selected``: the value model chosen on a validation window before the cutoff (the same evaluation at
``cutoff - H``, its labels ending at the cutoff): the model with the best validation Spearman, scored on
the test window (with ``--select``: it doubles the time); needs H days more history than the cell.
``short windows`` (only where production is still the BG/NBD fallback): the stacked LightGBM models trained
on a shorter label window that the history allows.
Run: ``python bench/value_grid.py [or] [sim] [--select] [--only or:90:2011-06-01 ...]`` (cells already in
bench/value_grid.json are kept; ``--only`` runs those cells again).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from bench.sections import or_dir  # noqa: E402

WORK = ROOT / "var" / "bench"
OUT_JSON, OUT_MD = ROOT / "bench" / "value_grid.json", ROOT / "bench" / "VALUE_GRID.md"
BEFORE_JSON = ROOT / "bench" / "value_grid_before.json"
PREVIOUS_JSON = ROOT / "bench" / "value_grid_previous.json"
VALUE = ("production", "last_period", "historical_rate", "bgnbd_gg")
CHURN = ("production", "bgnbd", "recency")
OR_END = pd.Timestamp("2011-12-09")
SIM_START, SIM_DAYS = pd.Timestamp("2025-01-01"), 730
CELLS: dict[str, list[tuple[int, pd.Timestamp]]] = {
    "or": [(h, OR_END - pd.Timedelta(days=h)) for h in (180, 270, 90, 30, 60)]
    + [(90, pd.Timestamp("2011-06-01"))],
    "sim": [(180, SIM_START + pd.Timedelta(days=200)), (270, SIM_START + pd.Timedelta(days=250))]
    + [(h, SIM_START + pd.Timedelta(days=SIM_DAYS - h)) for h in (90, 180, 30, 270)],
}
"""The most telling cells first (a run stopped early keeps them): the horizons whose stacked windows do not
fit (Online Retail's 180 and 270 days; the simulator's young cutoffs, 200 and 250 days after its start), then
the latest cutoff of each horizon."""
log = logging.getLogger("value_grid")


def sim_shop_dir() -> Path:
    from features.simulate import simulate_shop

    d = WORK / f"sim2000_{SIM_DAYS}d"
    if not (d / "orders.parquet").exists():
        simulate_shop(d, customers=2000, days=SIM_DAYS, seed=42, events=False)
    return d


def _metrics(shop: Any, cutoff: pd.Timestamp, h: int) -> dict[str, Any]:
    from models.customer import CustomerModelConfig
    from training.customer_eval import evaluate_customer_models

    ev = evaluate_customer_models(shop, cutoff, CustomerModelConfig(horizon_days=h))
    r = ev.report
    out = {
        "value": {
            m: {"spearman": r["value"][m]["spearman"], "gini": r["value"][m]["normalized_gini"]}
            for m in VALUE
        },
        "churn": {m: r["churn"][m]["auc"] for m in CHURN},
    }
    short = (
        _short_windows(shop, cutoff, h, ev.scores) if "fallback" in ev.models.components["value"] else None
    )
    if short is not None:
        out["value"]["short_windows"], out["churn"]["short_windows"] = short["value"], short["churn"]
        out["short_windows_horizon"] = short["horizon"]
    sel = ev.models.selection
    if sel:  # churn and value when the stacked windows do not fit, value only when they do
        out["selection"] = {c: sel[c]["chosen"] for c in ("churn", "value") if c in sel}
        out["selection"]["validation_days"] = sel.get("validation", {}).get("horizon_days")
        out["selection"]["label_days"] = sel.get("short_window", {}).get("label_days")
        out["selection"]["candidates"] = sorted(sel.get("validation", {}).get("value", {}))
    return {
        **out,
        "production_model": ev.models.components.get("value", ""),
        "customers": r["value"]["production"]["customers"],
        "zero_future_spend": float((ev.scores["future_net"] <= 0).mean()),
    }


def _short_windows(shop: Any, cutoff: pd.Timestamp, h: int, scores: pd.DataFrame) -> dict[str, Any] | None:
    """The stacked LightGBM models trained on the longest shorter label window (90, 60 or 30 days) that
    the history allows, scored against the H-day labels: does that rank better than the BG/NBD fallback?"""
    from scipy.stats import spearmanr

    from features.customer import customer_features
    from features.customer_labels import stacked_training_set, training_cutoffs
    from models.customer import ChurnModel, CustomerModelConfig, ValueModel
    from models.metrics import auc, normalized_gini

    for hs in (90, 60, 30):
        if hs >= h:
            continue
        cfg = CustomerModelConfig(horizon_days=hs)
        cutoffs = training_cutoffs(shop, cutoff, hs, cfg.n_cutoffs, cfg.cutoff_step_days)
        if not cutoffs:
            continue
        X, y = stacked_training_set(shop, cutoffs, hs)
        now = customer_features(shop, cutoff).reindex(scores.index)
        value = ValueModel(cfg).fit(X, y["future_net"]).predict(now).to_numpy()
        churn = ChurnModel(cfg).fit(X, y["churn"]).predict(now).to_numpy()
        target = scores["future_net"].clip(lower=0).to_numpy()
        return {
            "horizon": hs,
            "churn": auc(scores["churn"], churn),
            "value": {
                "spearman": float(spearmanr(target, value).statistic),
                "gini": normalized_gini(target, value),
            },
        }
    return None


def cell(shop: Any, h: int, cutoff: pd.Timestamp, select: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    test = _metrics(shop, cutoff, h)
    out: dict[str, Any] = {"horizon_days": h, "cutoff": str(cutoff.date()), **test}
    if not select:
        out["seconds"] = round(time.perf_counter() - t0, 1)
        return out
    try:
        val = _metrics(shop, cutoff - pd.Timedelta(days=h), h)
        best = max(VALUE, key=lambda m: (val["value"][m]["spearman"], m == "production"))
        out["selected"] = {
            "model": best,
            "validation_spearman": val["value"][best]["spearman"],
            **test["value"][best],
        }
    except Exception as e:  # no validation window before the cutoff: nothing to choose on
        out["selected"] = {"model": None, "why": f"{type(e).__name__}: {e}"[:200]}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _stacked(r: dict[str, Any]) -> bool:
    """Do the stacked windows fit in this cell (production's value the stacked model or its blend)?"""
    return "churn" not in r.get("selection", {}) and "fallback" not in r["production_model"]


def _model(r: dict[str, Any]) -> str:
    """Production's value model in a few words."""
    sel = r.get("selection")
    if sel:
        v, days = sel["value"], sel["validation_days"]
        on = f" (validated on {days} days)" if days else " (no validation window)"
        if _stacked(r):
            names = {"stacked": "LightGBM stacked", "stacked_blend": "stacked blend"}
            return names.get(v, f"chosen over the stacked model: {v}") + on
        if v == "short_window":
            return f"chosen: LightGBM on {sel['label_days']}-day windows{on}"
        return f"chosen: {v}{on}" if v != "bgnbd" else f"BG/NBD fallback{on}"
    return "BG/NBD fallback" if "fallback" in r["production_model"] else "LightGBM stacked"


def _chosen(r: dict[str, Any]) -> str:
    """The churn and value candidates chosen, and the validation window's length."""
    sel = r.get("selection")
    if not sel:
        return "stacked LightGBM" if "fallback" not in r["production_model"] else "BG/NBD fallback"
    return f"churn {sel.get('churn', 'stacked')}, value {sel['value']} ({sel['validation_days']} days)"


def _before(data: str, r: dict[str, Any], before: dict[str, list[dict[str, Any]]]) -> dict[str, Any] | None:
    return next((b for b in before.get(data, []) if (b["horizon_days"], b["cutoff"]) == (r["horizon_days"],
                                                                                     r["cutoff"])), None)


NAIVE = ("last_period", "historical_rate", "bgnbd_gg")
"""The baselines production must beat, or be chosen among before the cutoff (issue #17)."""


def _beats(v: dict[str, dict[str, float]]) -> str:
    """Does production rank at least as well as the three baselines, on Spearman and on Gini?"""
    p = v["production"]
    miss = [f"{k} < {m}" for m in NAIVE for k in ("spearman", "gini") if p[k] < v[m][k] - 5e-4]
    return "yes" if not miss else "**no** (" + ", ".join(miss) + ")"


def _rule(r: dict[str, Any]) -> str:
    """Issue #17's rule for the cell: production beats the three baselines on Spearman and Gini, or it is the
    candidate chosen among them (and the models) on a validation window before the cutoff."""
    if _beats(r["value"]) == "yes":
        return "yes: beats all three"
    sel = r.get("selection", {})
    among = {"bgnbd" if m == "bgnbd_gg" else m for m in NAIVE} <= set(sel.get("candidates", ()))
    if sel.get("validation_days") and among:
        return f"yes: chosen among them on {sel['validation_days']} days before the cutoff"
    return "**no**"


def markdown(grid: dict[str, list[dict[str, Any]]], before: dict[str, list[dict[str, Any]]] | None = None,
             previous: dict[str, list[dict[str, Any]]] | None = None) -> str:
    before = before or {}
    lines = [
        "# Value and churn grid",
        "",
        "Written by `bench/value_grid.py` (see its docstring). Value: Spearman / "
        "normalised Gini against the spend in the H days after the cutoff (tied predictions at their "
        "expected order: `models.metrics.normalized_gini`; by row order, as before, the naive baselines' "
        "many ties gained up to 0.04); churn: AUC. **Bold**: the "
        "best of the row. `production before`: the same cell on the code before the short-history choice "
        "(BG/NBD + Gamma-Gamma where stacked windows do not fit). `beats naive`: production at least as "
        "good as last-period spend, the historical rate and BG/NBD + Gamma-Gamma on Spearman and Gini (to "
        "0.0005). `rule`: issue #17's target, production beats the three, or production is the candidate "
        "chosen among them (and the models) on a validation window before the cutoff. `selected`: the value "
        "model with the best Spearman on a validation window of H days ending at the cutoff, scored on the "
        "test window. "
        "`production model` (stacked windows fit): the stacked LightGBM alone, its blend with both naive "
        "baselines (0.5 / 0.25 / 0.25), BG/NBD + Gamma-Gamma or a naive baseline, as chosen on the "
        "validation window named (`training/value_choice.py`). "
        "Timings are not reported (shared machine).",
        "",
    ]
    head = (
        "| data | H | cutoff | production model | zero spend | production before | "
        + " | ".join(VALUE)
        + " | beats naive | rule | selected | churn before | churn "
        + " | churn ".join(CHURN)
        + " | short windows: value / churn |"
    )
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for data, rows in grid.items():
        for r in rows:
            v = r["value"]
            best_s = max(v[m]["spearman"] for m in VALUE)
            best_g = max(v[m]["gini"] for m in VALUE)
            best_c = max(r["churn"][m] for m in CHURN)
            cells = []
            for m in VALUE:
                s = _f(v[m]["spearman"]) if v[m]["spearman"] < best_s else f"**{_f(v[m]['spearman'])}**"
                g = _f(v[m]["gini"]) if v[m]["gini"] < best_g else f"**{_f(v[m]['gini'])}**"
                cells.append(f"{s} / {g}")
            b = _before(data, r, before)
            same = "same (stacked fits)" if _stacked(r) else "-"
            b_txt = (f"{_f(b['value']['production']['spearman'])} / {_f(b['value']['production']['gini'])}"
                     if b else same)
            b_churn = _f(b["churn"]["production"]) if b else same
            sel = r.get("selected", {})
            sel_txt = (
                f"{sel['model']}: {_f(sel['spearman'])} / {_f(sel['gini'])}"
                if sel.get("model")
                else "no validation window"
                if sel
                else "not run"
            )
            churn = [
                (_f(r["churn"][m]) if r["churn"][m] < best_c else f"**{_f(r['churn'][m])}**") for m in CHURN
            ]
            sw = v.get("short_windows")
            sw_txt = (
                f"H'={r['short_windows_horizon']}: {_f(sw['spearman'])} / {_f(sw['gini'])} / "
                f"{_f(r['churn']['short_windows'])}"
                if sw
                else "-"
            )
            lines.append(
                f"| {data} | {r['horizon_days']} | {r['cutoff']} | {_model(r)} | "
                f"{r['zero_future_spend']:.0%} | {b_txt} | "
                + " | ".join(cells)
                + f" | {_beats(v)} | {_rule(r)} | {sel_txt} | {b_churn} | "
                + " | ".join(churn)
                + f" | {sw_txt} |"
            )
    lines += ["", *_summary(grid), *_changes(grid, previous or {})]
    return "\n".join(lines) + "\n"


def _changes(grid: dict[str, list[dict[str, Any]]], previous: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The cells whose production value (Spearman / Gini) or churn AUC moved since the previous grid, with the
    naive baselines beside."""
    rows = []
    for data, rs in grid.items():
        for r in rs:
            p = _before(data, r, previous)
            if p is None:
                continue
            v, pv = r["value"]["production"], p["value"]["production"]
            moved = max(abs(v[k] - pv[k]) for k in ("spearman", "gini"))
            if moved < 5e-4 and abs(r["churn"]["production"] - p["churn"]["production"]) < 5e-4:
                continue
            naive = " / ".join(f"{m} {_f(r['value'][m]['spearman'])} / {_f(r['value'][m]['gini'])}"
                               for m in NAIVE)
            rows.append(f"| {data} | {r['horizon_days']} | {r['cutoff']} | {_chosen(p)} | {_chosen(r)} | "
                        f"{_f(pv['spearman'])} / {_f(pv['gini'])} | {_f(v['spearman'])} / {_f(v['gini'])} | "
                        f"{naive} | {_f(p['churn']['production'])} | {_f(r['churn']['production'])} | "
                        f"{_f(r['churn']['bgnbd'])} / {_f(r['churn']['recency'])} |")
    if not rows:
        return []
    return ["", "## Changed since the previous grid", "",
            "Production before and after the latest change to the choice (`bench/value_grid_previous.json`); "
            "value Spearman / Gini, churn AUC.", "",
            "| data | H | cutoff | chosen before | chosen now | value before | value now | naive: last "
            "period / historical rate / BG/NBD + GG | churn before | churn now | churn BG/NBD / recency |",
            "|---|---|---|---|---|---|---|---|---|---|---|", *rows]


def _summary(grid: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Where production value does not rank at least as well as the three baselines (and whether it was then
    chosen among them before the cutoff), and churn as BG/NBD and recency."""
    rows = [(d, r) for d, rs in grid.items() for r in rs]
    value_miss = [f"{d} H={r['horizon_days']} {r['cutoff']} {_beats(r['value'])[7:]}" for d, r in rows
                  if _beats(r["value"]) != "yes"]
    churn_miss = [f"{d} H={r['horizon_days']} {r['cutoff']}" for d, r in rows
                  if r["churn"]["production"] < max(r["churn"]["bgnbd"], r["churn"]["recency"]) - 5e-4]
    rule_miss = [f"{d} H={r['horizon_days']} {r['cutoff']}" for d, r in rows if _rule(r) == "**no**"]
    return [f"Value: production at least as good as last-period spend, the historical rate and BG/NBD + "
            f"Gamma-Gamma in {len(rows) - len(value_miss)} of {len(rows)} cells; below one of them in: "
            f"{', '.join(value_miss) or 'none'}. Issue #17's rule (beats them, or chosen among them on a "
            f"validation window before the cutoff) holds in {len(rows) - len(rule_miss)} of {len(rows)} "
            f"cells; not in: {', '.join(rule_miss) or 'none'}.",
            "",
            f"Churn: production AUC at least BG/NBD's and recency's in {len(rows) - len(churn_miss)} of "
            f"{len(rows)} cells; below in: {', '.join(churn_miss) or 'none'}."]


def main(which: list[str], select: bool = False, only: tuple[str, ...] = ()) -> None:
    """Run the cells of ``which`` not yet in bench/value_grid.json; with ``only`` (``data:H:cutoff``, e.g.
    ``or:90:2011-06-01``) just those cells, run again and replaced."""
    from itertools import zip_longest

    from features.io import load_shop

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    grid: dict[str, list[dict[str, Any]]] = json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else {}
    before = json.loads(BEFORE_JSON.read_text()) if BEFORE_JSON.exists() else {}
    previous = json.loads(PREVIOUS_JSON.read_text()) if PREVIOUS_JSON.exists() else {}
    shops: dict[str, Any] = {}
    plan = [c for row in zip_longest(*[[(d, h, t) for h, t in CELLS[d]] for d in which]) for c in row if c]
    for data, h, cutoff in plan:  # the datasets' cells interleaved: a run stopped early has some of each
        key = (h, str(cutoff.date()))
        if only and f"{data}:{h}:{cutoff.date()}" not in only:
            continue
        if not only and key in {(r["horizon_days"], r["cutoff"]) for r in grid.get(data, [])}:
            continue
        grid[data] = [r for r in grid.get(data, []) if (r["horizon_days"], r["cutoff"]) != key]
        if data not in shops:
            shops[data] = load_shop(or_dir() if data == "or" else sim_shop_dir())
        log.info("%s: H=%d cutoff %s", data, h, cutoff.date())
        grid.setdefault(data, []).append(cell(shops[data], h, cutoff, select))
        grid[data].sort(key=lambda r: (r["horizon_days"], r["cutoff"]))
        OUT_JSON.write_text(json.dumps(grid, indent=1))
        OUT_MD.write_text(markdown(grid, before, previous))


if __name__ == "__main__":
    argv = sys.argv[1:]
    cells = tuple(argv[i + 1] for i, a in enumerate(argv) if a == "--only")
    args = [a for i, a in enumerate(argv) if a not in ("--select", "--only") and a not in cells]
    main(args or sorted({c.split(":")[0] for c in cells}) or ["or", "sim"], select="--select" in argv,
         only=cells)
