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

from batch_cli import register as register_batch_commands  # noqa: E402
from triggers_cli import register as register_trigger_commands  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Personalisation for shops: recommendations, customer value and churn, "
                       "next-best offers.")
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


register_batch_commands(app, _run)  # `features` and `score`, local or on Spark
register_trigger_commands(app, _run)  # `triggers scan`, `webhooks`, `dead-letters`, `check-config`


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


@import_app.command("hillstrom")
def import_hillstrom(src: Path = typer.Argument(..., help="hillstrom.csv.gz or its folder"),
                     out: Path = typer.Option(...),
                     send_cost: float = typer.Option(0.01, min=0, help="Cost of one e-mail (offers.yaml)."),
                     margin_rate: float = typer.Option(0.45, min=0, max=1, help="Margin rate (offers.yaml).")
                     ) -> None:
    """Hillstrom e-mail test -> customers with attributes, offers.yaml, offer_log (shared control), orders."""
    from features.importers import import_hillstrom as f
    r = _run(lambda: f(src, out, send_cost=send_cost, margin_rate=margin_rate))
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
          horizon_days: int = typer.Option(90, min=7),
          cutoff: str = typer.Option(None, help="Evaluation cutoff."), seed: int = typer.Option(42),
          force: bool = typer.Option(False, help="Retrain even if this data and config were trained before."),
          engine: str = typer.Option("local", help="Where the churn/value and uplift training frames "
                                                   "are built: local (pandas) or spark "
                                                   "(pip install '.[spark]')."),
          spark_master: str = typer.Option(None, help="Spark master URL (default: local[*])."),
          max_training_rows: int = typer.Option(150_000, min=0, help="Stacked churn/value rows past which "
                                                "a sample of customers is kept (0: never sample)."),
          uplift_learner: str = typer.Option("s_learner", help="How offer uplift is learned: s_learner, "
                                             "two_models_ddr, dr_learner or r_learner "
                                             "(models.offers.uplift).")
          ) -> None:
    """Validate, evaluate against baselines, refit, log to MLflow, register and promote if not worse."""
    from training.config import TrainConfig, with_horizon
    from training.jobs import train as job
    base = _run(lambda: TrainConfig(cutoff=cutoff, max_training_rows=max_training_rows or None,
                                    uplift_learner=uplift_learner))
    cfg = with_horizon(base, horizon_days, seed)
    r = _run(lambda: job(data, cfg, force=force, engine=engine, spark_master=spark_master))
    aside = sum(s["rows"] for s in r.live.get("set_aside", []))
    typer.echo(json.dumps({"run_id": r.run_id, "reused": r.reused, "promoted": r.promoted,
                           "versions": r.versions, "gate": r.reason, "cutoff": r.report.get("cutoff"),
                           "live_rows_set_aside": aside}, indent=1))


@app.command()
def evaluate(data: Path = typer.Option(...), cutoff: str = typer.Option(None),
             horizon_days: int = typer.Option(90), out: Path = typer.Option(Path("report.json")),
             seed: int = typer.Option(42)) -> None:
    """Evaluate every model and baseline on the window after the cutoff; nothing is registered."""
    from features.io import load_shop
    from training.config import TrainConfig, with_horizon
    from training.evaluate import evaluate as job

    def go() -> None:
        sdir = _shop_dir(data)
        shop = load_shop(sdir)
        truth = sdir / "truth" if (sdir / "truth").is_dir() else None
        ev = job(shop, with_horizon(TrainConfig(cutoff=cutoff), horizon_days, seed), truth)
        out.write_text(json.dumps(ev.report, indent=1))
        typer.echo(f"wrote {out}")
    _run(go)


@app.command()
def promote(data: Path = typer.Option(...),
            run: str = typer.Option(None, "--run", help="Training run whose four models become champion."),
            version: str = typer.Option(None, help="The recommender's version: its run's four models become "
                                                   "champion.")) -> None:
    """Point ``champion`` at an earlier run's models (rollback) - recorded as tags on each version."""
    from training.registry import promote as job
    p = _run(lambda: job(data, run_id=run, recommender_version=version))
    typer.echo(json.dumps({"run_id": p.run_id, "champion": p.versions, "previous": p.previous}))


@app.command()
def serve(data: Path = typer.Option(...), host: str = typer.Option("127.0.0.1"),
          port: int = typer.Option(3000),
          bundle: Path | None = typer.Option(None, help="Serve a local bundle directory instead of the "
                                                        "registry."),
          insecure_dev: bool = typer.Option(False, "--insecure-dev",
                                            help="Run without API keys (local demo only)."),
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
    from training.config import TrainConfig
    from training.jobs import train as job
    shop = data / "shop"
    if not (shop / "orders.parquet").exists():
        typer.echo(f"simulating a shop of {customers} customers into {shop} ...")
        _run(lambda: simulate_shop(shop, customers=customers, seed=seed, progress=True))
    r = _run(lambda: job(data, TrainConfig(seed=seed)))
    typer.echo(json.dumps({"run_id": r.run_id, "reused": r.reused, "promoted": r.promoted, "gate": r.reason}))
    base = f"http://127.0.0.1:{port}"
    post = f"curl -s -X POST -H 'content-type: application/json' {base}"
    event = '{"customer_id": "C0000001", "product_id": "P00010", "event_type": "view"}'
    banner = (f"""
The server is ready. Example calls (no API keys in demo mode):
  {post}/recommend -d '{{"customer_id": "C0000001", "k": 5}}'
  {post}/similar_items -d '{{"product_id": "P00010", "k": 5}}'
  {post}/offers -d '{{"customer_id": "C0000001"}}'
  {post}/customer_profile -d '{{"customer_id": "C0000001"}}'
  {post}/events -d '{{"events": [{event}]}}'
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
                    max_volume: int = typer.Option(None),
                    record: bool = typer.Option(False, help="Log the audience in the live store's "
                                                            "decision log (the service and later audiences "
                                                            "count it)."),
                    now: str = typer.Option(None, help="Send time (default: now, or the models' data end if "
                                                       "later).")) -> None:
    """Choose whom to contact with what, maximising expected incremental margin within the budget; sends
    already recorded in the live store count against caps and cooldowns."""
    import pandas as pd

    from training.audience import build_audience
    r = _run(lambda: build_audience(data, budget, channel=channel, campaign=campaign, max_volume=max_volume,
                                    out=out, record=record, now=pd.Timestamp(now) if now else None))
    typer.echo(json.dumps({**r.summary(), "out": str(out)}))


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
