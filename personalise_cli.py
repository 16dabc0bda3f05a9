"""``personalise``: the command line, a thin layer over the jobs.

Exit codes: 0 ok, 2 bad input (invalid data, catalogue or arguments), 1 any other failure.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import typer  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Personalisation for shops: recommendations, customer value and churn, next-best offers.")
import_app = typer.Typer(no_args_is_help=True, help="Import public datasets into the data contract.")
offers_app = typer.Typer(no_args_is_help=True, help="Next-best offers for the CRM engine.")
app.add_typer(import_app, name="import")
app.add_typer(offers_app, name="offers")
log = logging.getLogger("personalise")


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "mlflow", "urllib3", "numexpr"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _run(fn: Callable[[], Any]) -> Any:
    from features.exceptions import CatalogueError, DataValidationError, ModelFitError
    try:
        return fn()
    except DataValidationError as e:
        typer.echo(f"invalid data, nothing was fitted or registered:\n{e.report}", err=True)
        raise typer.Exit(2) from e
    except (CatalogueError, ModelFitError, FileNotFoundError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    except typer.Exit:
        raise
    except Exception as e:  # noqa: BLE001
        log.exception("failed")
        typer.echo(f"failed: {type(e).__name__}: {e}", err=True)
        raise typer.Exit(1) from e


@app.command()
def simulate(out: Path = typer.Option(..., help="Directory to write the shop into."),
             customers: int = typer.Option(20_000, min=10), days: int = typer.Option(365, min=60),
             seed: int = typer.Option(42), products: int = typer.Option(2_000, min=20),
             events: bool = typer.Option(True, help="Write behaviour events too.")) -> None:
    """Write a simulated shop (tables, offers.yaml, truth/) - identical for the same seed."""
    from features.simulate import simulate_shop
    s = _run(lambda: simulate_shop(out, customers=customers, days=days, seed=seed, products=products,
                                   events=events, progress=True))
    typer.echo(json.dumps(s["rows"]) + f"  ({s['seconds']} s)")


@import_app.command("online-retail")
def import_online_retail(src: Path = typer.Argument(..., help="online_retail.csv.gz or its folder"),
                         out: Path = typer.Option(...)) -> None:
    """UCI Online Retail -> shop tables (returns, non-product codes and rows without customers accounted)."""
    from features.importers import import_online_retail as f
    r = _run(lambda: f(src, out))
    typer.echo(json.dumps(r.to_dict(), indent=1))


@import_app.command("complete-journey")
def import_complete_journey(src: Path = typer.Argument(...), out: Path = typer.Option(...)) -> None:
    """84.51 Complete Journey -> shop tables, offer_log and offers.yaml."""
    from features.importers import import_complete_journey as f
    r = _run(lambda: f(src, out))
    typer.echo(json.dumps(r.to_dict(), indent=1))


@app.command()
def validate(data: Path = typer.Option(..., help="Shop directory.")) -> None:
    """Check the data against the contract; exit 2 when there are errors."""
    from features.io import load_shop

    def go() -> None:
        shop = load_shop(data)
        typer.echo(str(shop.report))
        typer.echo(json.dumps(shop.report.rows))
    _run(go)


def _shop_dir(data: Path) -> Path:
    return data / "shop" if (data / "shop").is_dir() else data


@app.command()
def train(data: Path = typer.Option(..., help="Project data directory (shop tables in DATA/shop or DATA)."),
          horizon_days: int = typer.Option(90, min=7), cutoff: str = typer.Option(None, help="Evaluation cutoff."),
          seed: int = typer.Option(42), force: bool = typer.Option(False, help="Retrain even if this data and "
                                                                              "config were trained before.")) -> None:
    """Validate, evaluate against baselines, refit, log to MLflow, register and promote if not worse."""
    from training.jobs import TrainConfig, with_horizon
    from training.jobs import train as job
    cfg = with_horizon(TrainConfig(cutoff=cutoff), horizon_days, seed)
    r = _run(lambda: job(data, cfg, force=force))
    typer.echo(json.dumps({"run_id": r.run_id, "reused": r.reused, "promoted": r.promoted, "versions": r.versions,
                           "gate": r.reason}, indent=1))


@app.command()
def evaluate(data: Path = typer.Option(...), cutoff: str = typer.Option(None), horizon_days: int = typer.Option(90),
             out: Path = typer.Option(Path("report.json")), seed: int = typer.Option(42)) -> None:
    """Evaluate every model and baseline on the window after the cutoff; nothing is registered."""
    from features.io import load_shop
    from training.jobs import TrainConfig, with_horizon
    from training.jobs import evaluate as job

    def go() -> None:
        sdir = _shop_dir(data)
        shop = load_shop(sdir)
        truth = sdir / "truth" if (sdir / "truth").is_dir() else None
        ev = job(shop, with_horizon(TrainConfig(cutoff=cutoff), horizon_days, seed), truth)
        out.write_text(json.dumps(ev.report, indent=1))
        typer.echo(f"wrote {out}")
    _run(go)


@app.command()
def promote(data: Path = typer.Option(...), version: str = typer.Option(..., help="Model version to make champion "
                                                                                  "(all four components).")) -> None:
    """Point ``champion`` at an earlier version (rollback) - recorded as a tag on the version."""
    def go() -> None:
        import getpass

        import pandas as pd
        from mlflow import MlflowClient

        from training.jobs import MODEL_NAMES, setup_mlflow
        setup_mlflow(data)
        c = MlflowClient()
        for name in MODEL_NAMES.values():
            c.get_model_version(name, version)  # fails before any change if missing
        for name in MODEL_NAMES.values():
            c.set_registered_model_alias(name, "champion", version)
            c.set_model_version_tag(name, version, "promoted_by", getpass.getuser())
            c.set_model_version_tag(name, version, "promoted_at", pd.Timestamp.now(tz="UTC").isoformat())
            c.set_model_version_tag(name, version, "promotion", "manual (personalise promote)")
        typer.echo(f"champion -> version {version}")
    _run(go)


@app.command()
def serve(data: Path = typer.Option(...), host: str = typer.Option("127.0.0.1"), port: int = typer.Option(3000),
          bundle: Path | None = typer.Option(None, help="Serve a local bundle directory instead of the registry."),
          insecure_dev: bool = typer.Option(False, "--insecure-dev", help="Run without API keys (local demo only)."),
          max_concurrency: int = typer.Option(64)) -> None:
    """Start the BentoML service (loads the champion models, pinned)."""
    _serve(data, host, port, bundle, insecure_dev, max_concurrency)


def _serve(data: Path, host: str, port: int, bundle: Path | None, insecure_dev: bool, max_concurrency: int,
           banner: str | None = None) -> None:
    """Start the server (replacing this process); with ``banner``, run it and print the banner once ready."""
    from serving.launch import serve_and_announce, server_command, server_env
    from serving.security import ConfigError, load_keys
    try:
        keys = load_keys()
    except ConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    if not keys and not insecure_dev:
        typer.echo("no API keys configured: set PERSONALISE_API_KEYS='storefront:KEY,crm:KEY,admin:KEY' or "
                   "PERSONALISE_API_KEYS_FILE; or pass --insecure-dev for a local demo", err=True)
        raise typer.Exit(2)
    if insecure_dev:
        typer.echo("WARNING: --insecure-dev: no API keys are checked. Never expose this server.", err=True)
    env = server_env(data, host, port, bundle, insecure_dev, max_concurrency)
    cmd = server_command(host, port)
    if banner is None:
        os.execvpe(cmd[0], cmd, env)
    raise typer.Exit(serve_and_announce(cmd, env, f"http://{host}:{port}", banner))


@app.command()
def demo(data: Path = typer.Option(Path("var/demo")), port: int = typer.Option(3000),
         customers: int = typer.Option(20_000), seed: int = typer.Option(42),
         serve_after: bool = typer.Option(True, "--serve/--no-serve")) -> None:
    """Simulate a shop (once), train every model, then serve on 127.0.0.1 and print example calls."""
    from features.simulate import simulate_shop
    from training.jobs import TrainConfig
    from training.jobs import train as job
    shop = data / "shop"
    if not (shop / "orders.parquet").exists():
        typer.echo(f"simulating a shop of {customers} customers into {shop} ...")
        _run(lambda: simulate_shop(shop, customers=customers, seed=seed, progress=True))
    r = _run(lambda: job(data, TrainConfig(seed=seed)))
    typer.echo(json.dumps({"run_id": r.run_id, "reused": r.reused, "promoted": r.promoted, "gate": r.reason}))
    base = f"http://127.0.0.1:{port}"
    banner = (f"""
The server is ready. Example calls (no API keys in demo mode):
  curl -s -X POST {base}/recommend -H 'content-type: application/json' -d '{{"customer_id": "C0000001", "k": 5}}'
  curl -s -X POST {base}/similar_items -H 'content-type: application/json' -d '{{"product_id": "P00010", "k": 5}}'
  curl -s -X POST {base}/offers -H 'content-type: application/json' -d '{{"customer_id": "C0000001"}}'
  curl -s -X POST {base}/customer_profile -H 'content-type: application/json' -d '{{"customer_id": "C0000001"}}'
  curl -s -X POST {base}/events -H 'content-type: application/json' -d '{{"events": [{{"customer_id": "C0000001", "product_id": "P00010", "event_type": "view"}}]}}'
  API docs (OpenAPI UI): {base}/  - MLflow UI: make mlflow (http://127.0.0.1:5000)
""")
    if serve_after:  # the example calls are printed once the server answers, not before its start-up log
        _serve(data, "127.0.0.1", port, None, True, 64, banner=banner)
    else:
        typer.echo(banner)


@offers_app.command("audience")
def offers_audience(data: Path = typer.Option(...), budget: float = typer.Option(..., min=0),
                    channel: str = typer.Option(None), campaign: str = typer.Option("campaign"),
                    out: Path = typer.Option(Path("audience.csv")),
                    max_volume: int = typer.Option(None)) -> None:
    """Choose whom to contact with what, maximising expected incremental margin within the budget."""
    def go() -> None:
        import pandas as pd

        from models.bundle import ServingBundle
        from models.offers import choose_audience, in_control_group
        from training.jobs import download_champion
        paths, versions = download_champion(data)
        b = ServingBundle.load(paths)
        if b.policy is None:
            raise ValueError("the champion has no offer policy (no offer_log with treatment and control groups)")
        X = b.features[b.features["n_orders"] > 0]
        control = pd.Series(in_control_group(list(X.index), campaign, b.policy.catalogue.control_share), index=X.index)
        cand = b.policy.score(X, b.scores["churn"].reindex(X.index), b.as_of, channel=channel,
                              segments=b.scores["segment"])
        chosen = choose_audience(cand[~cand["customer_id"].map(control).astype(bool)], budget, max_volume,
                                 offer_caps=b.policy.catalogue.caps())
        ctrl = cand[cand["customer_id"].map(control).astype(bool) & (cand["expected_value"] > 0)]
        ctrl = ctrl.sort_values("expected_value", ascending=False).drop_duplicates("customer_id")
        exp = pd.concat([chosen.assign(group="treatment"), ctrl.assign(group="control")], ignore_index=True)
        seg = b.scores["segment"].reindex(exp["customer_id"]).to_numpy()
        exp = exp.assign(segment=seg, reason=[f"uplift {u:.3f}, p(redeem) {p:.2f}" for u, p in
                                              zip(exp["uplift"], exp["p_redeem"], strict=True)],
                         campaign_id=campaign, model_version=versions.get("offers"))
        cols = ["customer_id", "offer_id", "channel", "group", "expected_value", "send_cost", "segment", "reason",
                "campaign_id", "model_version"]
        exp = exp[cols]
        exp.to_parquet(out, index=False) if out.suffix == ".parquet" else exp.to_csv(out, index=False)
        t = exp[exp["group"] == "treatment"]
        typer.echo(json.dumps({"contacts": len(t), "control_recorded": int((exp["group"] == "control").sum()),
                               "cost": round(float(t["send_cost"].sum()), 2), "budget": budget,
                               "expected_incremental_margin": round(float(t["expected_value"].sum()), 2),
                               "out": str(out)}))
    _run(go)


@offers_app.command("measure")
def offers_measure(data: Path = typer.Option(...), window_days: int = typer.Option(14),
                   out: Path = typer.Option(Path("uplift.csv"))) -> None:
    """Measured uplift per campaign (treatment vs control, 95% interval) from offer_log outcomes."""
    def go() -> None:
        import numpy as np

        from features.io import load_shop
        from training.offer_eval import campaign_rows, measure_uplift_by_segment, uplift_training_set
        shop = load_shop(_shop_dir(data))
        X, y = uplift_training_set(shop, window_days=window_days)
        if not len(y):
            raise ValueError("no offer_log in the data")
        y = y.assign(group=np.where(y["treated"], "treatment", "control"), converted=y["bought"].astype(int))
        res = measure_uplift_by_segment(X, y)
        res.to_csv(out, index=False)
        typer.echo(campaign_rows(res).round(4).to_string(index=False))
        typer.echo(f"per segment (value tier and discount affinity at send time): {out}")
    _run(go)


if __name__ == "__main__":
    app()
