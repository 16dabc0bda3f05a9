"""One benchmark section per invocation; prints one JSON line. Called by bench/run.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
WORK = ROOT / "var" / "bench"

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def sim_dir(n: int) -> Path:
    from features.simulate import simulate_shop

    d = WORK / f"sim{n}"
    if not (d / "orders.parquet").exists():
        simulate_shop(d, customers=n, seed=42)
    return d


def or_dir() -> Path:
    from features.importers import import_online_retail

    d = WORK / "online_retail"
    if not (d / "orders.parquet").exists():
        import_online_retail(SHARED / "online_retail", d)
    return d


def simulate(n: str) -> dict:
    from features.simulate import simulate_shop

    d = WORK / f"simgen{n}"
    shutil.rmtree(d, ignore_errors=True)
    t0 = time.perf_counter()
    s = simulate_shop(d, customers=int(n), seed=42)
    secs = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
    shutil.rmtree(d, ignore_errors=True)
    return {
        "customers": int(n),
        "seconds": round(secs, 1),
        "rows": s["rows"],
        "disk_mb": round(size / 2**20, 1),
    }


def import_or() -> dict:
    from features.importers import import_online_retail

    d = WORK / "online_retail"
    shutil.rmtree(d, ignore_errors=True)
    t0 = time.perf_counter()
    r = import_online_retail(SHARED / "online_retail", d)
    return {"seconds": round(time.perf_counter() - t0, 1), **r.to_dict()}


def recommend(which: str) -> dict:
    from features.io import load_shop
    from training.rec_eval import evaluate_recommenders

    shop = load_shop(or_dir() if which == "or" else sim_dir(20000))
    cutoff = pd.Timestamp("2011-09-01") if which == "or" else pd.Timestamp("2025-11-01")
    ev = evaluate_recommenders(shop, cutoff)
    rr = ev.production.reranker_
    return {
        "cutoff": str(cutoff.date()),
        **ev.report,
        "blend_weights": ev.production.weights_,
        "discovery_weights": ev.production.discovery_weights_,
        "reranker": {
            "validation": ev.production.rerank_validation_,
            "gain": rr.importance() if rr is not None else {},
        },
    }


def customer(which: str) -> dict:
    from features.io import load_shop
    from models.customer import CustomerModelConfig
    from models.metrics import auc, normalized_gini
    from training.customer_eval import evaluate_customer_models

    if which == "or":
        shop = load_shop(or_dir())
        cutoff, h = pd.Timestamp("2011-09-01"), 100
    else:
        shop = load_shop(sim_dir(20000))
        cutoff, h = pd.Timestamp("2025-10-01"), 90
    ev = evaluate_customer_models(shop, cutoff, CustomerModelConfig(horizon_days=h), ceiling=True)
    out = {
        "cutoff": str(cutoff.date()),
        "horizon_days": h,
        **ev.report,
        "value_decile_lift": ev.tables["value_decile_lift"].round(3).to_dict("records"),
        "churn_reliability": ev.tables["churn_reliability"].round(3).to_dict("records"),
    }
    if which == "sim":  # against the planted truth
        t = (
            pd.read_parquet(sim_dir(20000) / "truth" / "customers.parquet")
            .set_index("customer_id")
            .reindex(ev.scores.index)
        )
        gone = (t["dropout_at"] < cutoff).to_numpy()
        rate = (t["orders_per_year"] * t["expected_basket"] * (1 - t["return_rate"]) * ~gone).to_numpy()
        out["truth"] = {
            "churn_auc_vs_true_dropout": {
                m: auc(gone, ev.scores[f"churn_{m}"]) for m in ("production", "recency", "bgnbd")
            },
            "value_gini_vs_true_rate": {
                m: normalized_gini(rate, ev.scores[f"value_{m}"].fillna(0))
                for m in ("production", "last_period", "historical_rate", "bgnbd_gg")
            },
        }
    return out


def offers(which: str) -> dict:
    from features.io import load_shop
    from training.offer_eval import evaluate_offers

    d = sim_dir(20000)
    shop = load_shop(d)
    ev = evaluate_offers(shop, pd.Timestamp("2025-09-01"), None, 42, d / "truth")
    pol = ev.report.get("policies", {})
    ratios = {}
    if pol:
        ratios = {
            "vs_propensity": pol["production"]["incremental_margin"]
            / pol["propensity"]["incremental_margin"],
            "share_of_oracle": pol["production"]["incremental_margin"] / pol["oracle"]["incremental_margin"],
        }
        # the model the train job ships is refitted on every campaign (the one above stops at the cutoff, so
        # that later campaigns can measure its Qini): the same policy benchmark for it
        from models.offers import parse_catalogue
        from training.offer_eval import fit_uplift, policy_benchmark

        refit = fit_uplift(shop, shop.end, 42)
        if refit is not None:
            p2 = policy_benchmark(shop, parse_catalogue(shop.offers), refit, None, d / "truth", 42, 0.2)[
                "policies"
            ]
            pol["production_all_campaigns"] = p2["production"]
            ratios["all_campaigns_share_of_oracle"] = (
                p2["production"]["incremental_margin"] / pol["oracle"]["incremental_margin"]
            )
    return {
        **ev.report,
        "ratios": ratios,
        "measured_uplift": ev.tables.get("measured_uplift", pd.DataFrame()).round(4).to_dict("records"),
    }


def redemption_cj() -> dict:
    """Complete Journey: redemption model on campaigns starting after a split date vs past redemptions."""
    from features.importers import import_complete_journey
    from features.io import load_shop
    from models.customer import ChurnModel, CustomerModelConfig
    from models.metrics import auc
    from training.offer_eval import uplift_training_set

    d = WORK / "complete_journey"
    if not (d / "orders.parquet").exists():
        import_complete_journey(SHARED / "complete_journey", d)
    shop = load_shop(d)
    X, y = uplift_training_set(shop, window_days=60)
    split = pd.Timestamp("2017-08-01")
    tr, te = (y["sent_at"] < split).to_numpy(), (y["sent_at"] >= split).to_numpy()
    Xf = X.reset_index(drop=True).assign(offer_id=pd.Categorical(y["offer_id"]))
    # past redemptions as of each send date (from the offer log itself, strictly before the send)
    ol = shop.offer_log.sort_values("sent_at")
    past = []
    for cid, sent in zip(y["customer_id"], y["sent_at"], strict=True):
        h = ol[(ol["customer_id"] == cid) & (ol["redeemed_at"] < sent)]
        past.append(len(h))
    past = np.array(past, float)
    Xf["past_redemptions"] = past
    m = ChurnModel(
        CustomerModelConfig(n_estimators=200, num_leaves=15, min_child_samples=30, seed=42),
        ["top_category", "preferred_channel", "acquisition_channel", "region", "offer_id"],
    ).fit(Xf[tr], y["redeemed"][tr].astype(float))
    p = m.predict(Xf[te]).to_numpy()
    r = y["redeemed"][te].to_numpy()
    return {
        "train_rows": int(tr.sum()),
        "test_rows": int(te.sum()),
        "test_redemption_rate": float(r.mean()),
        "split": str(split.date()),
        "window_days": 60,
        "auc": {"production": auc(r, p), "baseline_past_redemptions": auc(r, past[te])},
        "note": "no control group in this data: uplift cannot be measured, only redemption",
    }


def ope(top: int = 10) -> dict:
    """Open Bandit (random logs): learn a policy on the first half of each log - uniform over the ``top``
    items with the highest smoothed click rate in each position - and estimate its click rate on the second
    half with IPS and doubly robust estimators (bootstrap 95% intervals), against the logged random policy.
    A stochastic top-k policy overlaps the log far more than a single best item, so IPS has usable variance."""
    from models.offers import doubly_robust, mean_ci

    out = {}
    for camp in ("all", "men", "women"):
        df = pd.read_csv(SHARED / "zozo_open_bandit_small" / f"random_{camp}.csv.gz").drop(
            columns=["Unnamed: 0"]
        )
        df = df.sort_values("timestamp").reset_index(drop=True)
        half = len(df) // 2
        tr, te = df.iloc[:half], df.iloc[half:]
        prior = tr["click"].mean()
        g = tr.groupby(["position", "item_id"])["click"].agg(["sum", "count"])
        ctr = (g["sum"] + 50 * prior) / (g["count"] + 50)
        best = {
            p: set(ctr.loc[p].sort_values(ascending=False).index[:top])
            for p in ctr.index.get_level_values(0).unique()
        }
        pos, item = te["position"].to_numpy(), te["item_id"].to_numpy()
        pi = np.array([1.0 / top if i in best[p] else 0.0 for p, i in zip(pos, item, strict=True)])
        r, pscore = te["click"].to_numpy(), te["propensity_score"].to_numpy()
        q_logged = np.array([ctr.get((p, i), prior) for p, i in zip(pos, item, strict=True)])
        q_target = np.array([np.mean([ctr.get((p, i), prior) for i in best[p]]) for p in pos])
        w = pi / pscore
        ips_terms = w * r
        dr_terms = doubly_robust(r, w, 1.0, q_logged, q_target)  # w already holds pi/p
        bts = pd.read_csv(SHARED / "zozo_open_bandit_small" / f"bts_{camp}.csv.gz")["click"].mean()
        out[camp] = {
            "logged_random_ctr": mean_ci(r),
            "learned_policy_ips": mean_ci(ips_terms),
            "learned_policy_dr": mean_ci(dr_terms),
            "bts_on_policy_ctr": float(bts),
            "test_rows": int(len(te)),
            "rows_in_policy_support": int((pi > 0).sum()),
            "top_k": top,
        }
    return out


def train(which: str) -> dict:
    from training.config import TrainConfig
    from training.jobs import train as job

    src = {"or": or_dir, "sim20k": lambda: sim_dir(20000), "sim100k": lambda: sim_dir(100000)}[which]()
    proj = WORK / f"train_{which}"
    shutil.rmtree(proj, ignore_errors=True)
    proj.mkdir(parents=True)
    shutil.copytree(src, proj / "shop")
    cfg = TrainConfig(horizon_days=100 if which == "or" else 90)
    t0 = time.perf_counter()
    r = job(proj, cfg)
    return {
        "seconds": round(time.perf_counter() - t0, 1),
        "promoted": r.promoted,
        "gate_metrics": {
            k: r.metrics.get(k)
            for k in (
                "recommend.all_items.production.ndcg@10",
                "churn.production.auc",
                "value.production.spearman",
            )
        },
    }


def live_path() -> dict:
    """In-process ms per call of the live path and the CRM calls (see bench/live_path.py)."""
    if not (WORK / "train_sim20k" / "mlflow").exists():
        train("sim20k")
    from bench.live_path import measure

    return measure()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve() -> dict:
    """Start the server on the 20k simulated shop's models; load it with wrk at 8 connections."""
    import httpx

    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], capture_output=True)
        if shutil.which("wrk") is None:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], capture_output=True)
    if shutil.which("wrk") is None:
        return {"error": "wrk could not be installed (apt-get install wrk)"}
    proj = WORK / "train_sim20k"
    if not (proj / "mlflow").exists():
        train("sim20k")
    port = _free_port()
    key = "bench-storefront-key"
    env = dict(
        os.environ,
        PERSONALISE_DATA=str(proj),
        PERSONALISE_API_KEYS=f"storefront:{key},crm:bench-crm-key-1",
        PERSONALISE_DB=f"sqlite:///{WORK / 'bench_live.db'}",
        OPENBLAS_NUM_THREADS="1",
    )
    (WORK / "bench_live.db").unlink(missing_ok=True)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bentoml",
            "serve",
            "serving.service:PersonaliseService",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--working-dir",
            str(ROOT),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        orders = pd.read_parquet(proj / "shop" / "orders.parquet")
        all_ids = orders["customer_id"].drop_duplicates().head(4000)
        ids, quiet_ids = all_ids[:2000].tolist(), all_ids[2000:].tolist()  # quiet: never sent events here
        results: dict[str, Any] = {}
        rec_body = 'function() return \'{"customer_id": "\' .. ids[math.random(#ids)] .. \'", "k": 10}\' end'
        excl_body = (
            'function() return \'{"customer_id": "\' .. ids[math.random(#ids)] .. '
            '\'", "k": 10, "exclude_bought": true}\' end'
        )
        def session_fn(extra: str = "") -> str:  # the request's own session: folded in on every request
            return (
                'function() local c = ids[math.random(#ids)]; local s = {}; for i = 1, 5 do '
                's[i] = \'{"product_id": "P\' .. string.format("%05d", math.random(0, 1999)) .. '
                '\'", "event_type": "view"}\' end; return \'{"customer_id": "\' .. c .. '
                f'\'", "k": 10{extra}, "session_events": [\' .. table.concat(s, ",") .. \']}}\' end'
            )

        session_body, session_excl_body = session_fn(), session_fn(', "exclude_bought": true')
        events_body = (
            "function() local c = ids[math.random(#ids)]; return '{\"events\": [' .. "
            'string.rep(\'{"customer_id": "\' .. c .. \'", "product_id": "P00010", '
            '"event_type": "view"},\', 9) .. '
            '\'{"customer_id": "\' .. c .. \'", "product_id": "P00011", '
            '"event_type": "view"}]}\' end'
        )
        profile_body = "function() return '{\"customer_id\": \"' .. ids[math.random(#ids)] .. '\"}' end"

        def script(
            name: str, path: str, role_key: str, body_fn: str = rec_body, who: list[str] = ids
        ) -> Path:
            lua = WORK / f"bench_{name}.lua"
            lua.write_text(f"""
ids = {{{",".join(json.dumps(i) for i in who)}}}
make_body = {body_fn}
request = function()
  return wrk.format("POST", "{path}", {{["content-type"]="application/json", ["Authorization"]="Bearer {role_key}"}}, make_body())
end
done = function(summary, latency, requests)
  io.write(string.format("JSON{{\\"requests\\": %d, \\"duration_us\\": %d, \\"p50_ms\\": %.2f, \\"p95_ms\\": %.2f, \\"p99_ms\\": %.2f, \\"non2xx\\": %d, \\"errors\\": %d}}\\n",
    summary.requests, summary.duration, latency:percentile(50)/1000, latency:percentile(95)/1000, latency:percentile(99)/1000,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
""")
            return lua

        def start(lua: Path, seconds: int, conns: int = 8) -> subprocess.Popen:
            cmd = [
                "wrk",
                f"-t{min(2, conns)}",
                f"-c{conns}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                str(lua),
                url,
            ]
            return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def finish(proc: subprocess.Popen) -> dict[str, Any]:
            out, _ = proc.communicate()
            r = json.loads([ln for ln in out.splitlines() if ln.startswith("JSON")][-1][4:])
            r["rps"] = round(r["requests"] / (r["duration_us"] / 1e6), 1)
            return r

        def load(lua: Path, seconds: int, conns: int = 8) -> dict[str, Any]:
            return finish(start(lua, seconds, conns))

        def rounds_of(names: list[str], n: int, seconds: int = 4) -> dict[str, Any]:
            """``names`` in ``n`` short rounds, each first in turn, so that a slower stretch of the shared
            machine (its speed varies by 30% from minute to minute) hits all alike; totals and the median
            round's latency."""
            rounds = [
                {m: load(scripts[m], seconds) for m in names[i % len(names) :] + names[: i % len(names)]}
                for i in range(n)
            ]
            out: dict[str, Any] = {}
            for m in names:
                rs = [r[m] for r in rounds]
                req, dur = sum(r["requests"] for r in rs), sum(r["duration_us"] for r in rs)
                out[m] = {
                    "requests": req,
                    "duration_us": dur,
                    "rps": round(req / (dur / 1e6), 1),
                    "p50_ms": float(np.median([r["p50_ms"] for r in rs])),
                    "p95_ms": float(np.median([r["p95_ms"] for r in rs])),
                    "p99_ms": float(np.median([r["p99_ms"] for r in rs])),
                    "p99_ms_per_round": [r["p99_ms"] for r in rs],
                    "non2xx": sum(r["non2xx"] for r in rs),
                    "errors": sum(r["errors"] for r in rs),
                }
            for m in names[1:]:
                out[m]["vs_echo_per_round"] = [round(r[m]["rps"] / r[names[0]]["rps"], 3) for r in rounds]
                out[m]["vs_echo_throughput"] = round(out[m]["rps"] / out[names[0]]["rps"], 3)
            return out

        crm = "bench-crm-key-1"
        scripts = {
            "echo": script("echo", "/echo", key),
            "recommend": script("recommend", "/recommend", key),
            "offers": script("offers", "/offers", crm),
            "events": script("events", "/events", key, events_body),
            "customer_profile": script("profile", "/customer_profile", crm, profile_body),
            "recommend_exclude_bought": script("recommend_excl", "/recommend", key, excl_body),
            "recommend_session": script("recommend_session", "/recommend", key, session_body),
            "recommend_session_excl": script("recommend_session_excl", "/recommend", key, session_excl_body),
            "recommend_quiet": script("recommend_quiet", "/recommend", key, rec_body, quiet_ids),
        }
        for n in ("echo", "recommend", "offers", "customer_profile"):  # warm-up (events later)
            subprocess.run(
                ["wrk", "-t2", "-c8", "-d3s", "-s", str(scripts[n]), url], capture_output=True, text=True
            )
        # echo and recommend alternate in short rounds, in turn first
        first = rounds_of(["echo", "recommend"], 8)
        results["echo"], results["recommend"] = first["echo"], first["recommend"]
        results["recommend_vs_echo_per_round"] = first["recommend"]["vs_echo_per_round"]
        crm_rounds = rounds_of(["echo", "offers", "customer_profile"], 3)
        results["echo_crm_rounds"] = crm_rounds["echo"]
        results["offers"], results["customer_profile"] = crm_rounds["offers"], crm_rounds["customer_profile"]
        import httpx as _httpx

        batch_s = []
        for i in range(3):
            who = ids[(i * 500) % 1000 : (i * 500) % 1000 + 1000]
            t0 = time.perf_counter()
            r = _httpx.post(
                f"{url}/offers_batch",
                json={"customer_ids": who},
                headers={"Authorization": f"Bearer {crm}"},
                timeout=120,
            )
            batch_s.append(round(time.perf_counter() - t0, 3))
            assert r.status_code == 200 and len(r.json()) == len(who), r.text[:300]
        results["offers_batch_1000"] = {
            "seconds_per_call": batch_s,
            "median_seconds": float(np.median(batch_s)),
        }
        subprocess.run(
            ["wrk", "-t2", "-c8", "-d3s", "-s", str(scripts["events"]), url], capture_output=True, text=True
        )
        results["events"] = load(scripts["events"], 15)
        results["events"]["events_per_s"] = round(results["events"]["rps"] * 10, 1)
        # now most of the 2,000 customers have live events: their recommendations are folded in, not looked up
        # (a live customer's answer is kept until their events change: most of these are answered from it;
        # recommend_session folds the request's own five events in on every request, the uncached cost);
        # ten rounds: one run's per-round ratios of the fresh fold-in to echo spread from 0.40 to 0.67 over six
        live = rounds_of(["echo", "recommend", "recommend_exclude_bought", "recommend_session",
                          "recommend_session_excl"], 10)
        results["echo_live_rounds"] = live["echo"]
        results["recommend_after_events"] = live["recommend"]
        results["recommend_after_events_exclude_bought"] = live["recommend_exclude_bought"]
        results["recommend_session_events"] = live["recommend_session"]
        results["recommend_session_events_exclude_bought"] = live["recommend_session_excl"]
        # a day's mix, all at once: cached recommends (customers without events), live-session recommends
        # while their customers send events, offers; wrk processes side by side, 8 connections split 5/2/1
        # (+1 sending events)
        mixed_s = 20
        procs = {
            "recommend_cached": start(scripts["recommend_quiet"], mixed_s, 5),
            "recommend_live": start(scripts["recommend"], mixed_s, 2),
            "offers": start(scripts["offers"], mixed_s, 1),
            "events": start(scripts["events"], mixed_s, 1),
        }
        mixed = {n: finish(pr) for n, pr in procs.items()}
        total = sum(mixed[n]["rps"] for n in ("recommend_cached", "recommend_live", "offers"))
        for n in ("recommend_cached", "recommend_live", "offers"):
            mixed[n]["share"] = round(mixed[n]["rps"] / total, 3)
        results["mixed"] = mixed
        import sqlalchemy as sa

        eng = sa.create_engine(f"sqlite:///{WORK / 'bench_live.db'}")
        with eng.connect() as c:
            stored = c.execute(sa.text("select count(*) from events")).scalar_one()
        acked = (results["events"]["requests"] - results["events"]["non2xx"]) * 10
        results["events"]["stored_events"] = int(stored)
        results["events"]["acknowledged_events_at_least"] = int(acked)
        results["recommend_vs_echo_throughput"] = round(
            results["recommend"]["rps"] / results["echo"]["rps"], 3
        )
        return results
    finally:
        import psutil

        kids = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        for k in psutil.wait_procs(kids, timeout=10)[1]:
            k.kill()


def triggers() -> dict:
    """Orders -> triggers -> feed and webhooks under load, SQLite and PostgreSQL (see bench/triggers.py): the
    stress, orders back to back at 0, 300, 600 and 1,000 events/s (the knee; the table's main row is the
    last), then a shop's day, :data:`PACED_ORDERS_PER_S` orders/s at 1,000 events/s (under ``paced``)."""
    proj = WORK / "train_sim20k"
    if not (proj / "mlflow").exists():
        train("sim20k")
    out = _triggers_run(proj, "--events-per-s", "0,300,600,1000")
    if "error" not in out:
        out["paced"] = _triggers_run(proj, "--events-per-s", "1000", "--orders-per-s", str(PACED_ORDERS_PER_S))
    return out


PACED_ORDERS_PER_S = 20
"""Orders per second in the shop's-day run of the triggers bench: far above a 1M-customer shop's average
(about 0.3 orders/s for 10M order lines a year), a sale's peak."""


def _triggers_run(proj: Path, *args: str) -> dict:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "triggers.py"), "--data", str(proj), *args],
                         capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        return {"error": out.stderr[-3000:]}
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    name, *args = sys.argv[1:]
    res = globals()[name](*args)
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    res["peak_rss_mb_self"] = round(max(own, kids) / 1024, 1)  # this section's process (or its server)
    print(json.dumps(res, default=lambda o: float(o) if isinstance(o, np.floating) else str(o)))
