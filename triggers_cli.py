"""The trigger commands of ``personalise`` (registered by :func:`register`, as :mod:`batch_cli`)::

    personalise triggers scan --data DIR [--now 2026-12-01T06:00] [--config triggers.toml]
    personalise triggers webhooks --data DIR [--status dead]
    personalise triggers dead-letters --data DIR [--requeue ID ... | --all]
    personalise triggers check-config triggers.toml

``scan`` is what the service runs every ``scan_interval_seconds``: dormancy lines crossed and churn-risk bands
entered fire once per episode, each with its decision (run it from cron when the background scan is off).
``dead-letters`` lists the webhook deliveries that failed ``max_attempts`` times and, once the receiver is
fixed, requeues them (``--requeue ID``, repeatable, or ``--all``): the running service's senders post them
again, each once. The live store is ``PERSONALISE_DB`` (default ``DATA/live.db``), as for ``personalise
serve``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer

Runner = Callable[[Callable[[], Any]], Any]
CONFIG_HELP = "Triggers/webhooks TOML file (default: $PERSONALISE_TRIGGERS_CONFIG, else the defaults)."


def register(app: typer.Typer, run: Runner) -> None:
    triggers_app = typer.Typer(no_args_is_help=True, help="Live triggers: the scheduled scan and webhooks.")
    app.add_typer(triggers_app, name="triggers")

    @triggers_app.command("scan")
    def scan_command(data: Path = typer.Option(..., help="Project data directory (the registry, live.db)."),
                     now: str = typer.Option(None, help="Scan as of this time (default: now, UTC)."),
                     config: Path = typer.Option(None, help=CONFIG_HELP),
                     bundle: Path = typer.Option(None, help="A local bundle directory instead of the "
                                                            "registry's champion.")) -> None:
        """Fire the dormancy and churn-risk triggers due now (once per episode), with their decisions."""
        typer.echo(json.dumps(run(lambda: scan_now(data, now, config, bundle))))

    @triggers_app.command("webhooks")
    def webhooks_command(data: Path = typer.Option(...),
                         status: str = typer.Option(None, help="Only deliveries in this status: "
                                                               "pending, delivered or dead (the dead "
                                                               "letters).")) -> None:
        """Webhook deliveries per status, and the ones in ``--status`` with their last error."""
        typer.echo(run(lambda: webhook_summary(data, status)))

    @triggers_app.command("dead-letters")
    def dead_letters_command(
            data: Path = typer.Option(..., help="Project data directory (live.db)."),
            requeue_ids: list[int] = typer.Option(None, "--requeue", help="Requeue this dead delivery (its "
                                                                          "id in the list); repeatable."),
            every: bool = typer.Option(False, "--all", help="Requeue every dead delivery."),
            limit: int = typer.Option(100, help="List at most this many.")) -> None:
        """List the webhook dead letters, or requeue them for the service's senders to post again."""
        if requeue_ids and every:
            raise typer.BadParameter("give --requeue ID or --all, not both")
        typer.echo(json.dumps(run(lambda: dead_letters_or_requeue(data, list(requeue_ids or []), every,
                                                                  limit))))

    @triggers_app.command("check-config")
    def check_config(path: Path = typer.Argument(..., help="The TOML file.")) -> None:
        """Validate a triggers/webhooks file (and that its signing key is in the environment)."""
        typer.echo(json.dumps(run(lambda: checked_config(path))))


def scan_now(data: Path, now: str | None, config: Path | None, bundle: Path | None) -> dict[str, Any]:
    """One scan of the dormancy and churn-risk triggers, as of ``now`` (default: now, UTC)."""
    import pandas as pd

    from serving.runtime import Personaliser
    from serving.trigger_config import load_config
    from serving.trigger_scan import scan
    cfg = load_config(config)
    cfg.triggers.scan_interval_seconds = 0  # this one scan only
    p = Personaliser(data, bundle, live_config=cfg)
    try:
        when = pd.Timestamp(now).to_pydatetime() if now else None
        version = p.current.version if p.current else "none"
        return {**scan(p.orders, p.current, when), "model_version": version}
    finally:
        p.close()


@contextlib.contextmanager
def live_store(data: Path) -> Iterator[Any]:
    """The live store of ``data`` (``PERSONALISE_DB``, default ``DATA/live.db``), disposed of after use."""
    import os

    from features.live import LiveStore, default_url
    store = LiveStore(os.environ.get("PERSONALISE_DB") or default_url(data))
    try:
        yield store
    finally:
        store.engine.dispose()


def webhook_summary(data: Path, status: str | None) -> str:
    """Deliveries per status as JSON, then the ones in ``status`` as a table."""
    from serving.webhooks import deliveries
    with live_store(data) as store:
        d = deliveries(store)
    counts = d["status"].value_counts().to_dict() if len(d) else {}
    out = json.dumps({"deliveries": int(len(d)), "by_status": counts})
    if status is not None:
        cols = ["id", "trigger_id", "url", "status", "attempts", "last_error", "delivered_at"]
        shown = d.loc[d["status"] == status, cols]
        out += "\n" + (shown.to_string(index=False) if len(shown) else f"(no {status} deliveries)")
    return out


def dead_letters_or_requeue(data: Path, requeue_ids: list[int], every: bool, limit: int) -> dict[str, Any]:
    """The dead letters (at most ``limit``), or the result of requeueing ``requeue_ids`` (all: ``every``)."""
    from serving.webhooks import dead_letters, requeue
    with live_store(data) as store:
        if requeue_ids or every:
            return requeue(store, None if every else requeue_ids)
        return {"dead_letters": dead_letters(store, limit)}


def checked_config(path: Path) -> dict[str, Any]:
    """A triggers/webhooks file validated: its trigger settings and the kinds that have a webhook."""
    from serving.trigger_config import load_config
    cfg = load_config(path)
    return {"ok": True, "triggers": cfg.triggers.model_dump(), "webhooks": sorted(cfg.webhooks.urls)}
