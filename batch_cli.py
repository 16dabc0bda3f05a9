"""The batch commands of ``personalise``: ``features`` and ``score``, each with ``--engine local|spark``.

They are registered on the main command line by :func:`register` (``personalise_cli.py`` calls
``register(app, _run)``, so that errors map to its exit codes: 2 bad input, 1 failure)::

    personalise features --data DIR --cutoff 2025-10-01 --out features.parquet [--engine spark]
    personalise score --data DIR --out OUT [--engine spark] [--spark-master URL] [--tables URI]
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

Runner = Callable[[Callable[[], Any]], Any]

ENGINE_HELP = (
    "local: pandas in this process; spark: groupBy(customer bucket).applyInPandas on a Spark cluster."
)
MASTER_HELP = "Spark master URL (local[4], spark://host:7077, yarn); default: spark-submit's, else local[*]."


def features_command(run: Runner) -> Callable[..., None]:
    def features(
        data: str = typer.Option(..., help="Shop tables: a directory (local) or any Hadoop URI (spark)."),
        out: str = typer.Option(..., help="Parquet output (a file locally, a directory on Spark)."),
        cutoff: str = typer.Option(None, help="Features as of this time (default: just after the last row)."),
        engine: str = typer.Option("local", help=ENGINE_HELP),
        spark_master: str = typer.Option(None, "--spark-master", help=MASTER_HELP),
        buckets: int = typer.Option(None, min=1,
                                    help="Customer buckets on Spark (default: from the data size)."),
    ) -> None:
        """Write the customer feature frame (one row per customer, nothing after the cutoff) as Parquet."""
        import pandas as pd

        from features.engine import open_engine

        def go() -> str:
            with open_engine(engine, data, master=spark_master, buckets=buckets) as eng:
                at = pd.Timestamp(cutoff) if cutoff else eng.facts().default_cutoff()
                return eng.write_features(at, out)

        typer.echo(run(go))

    return features


def score_command(run: Runner) -> Callable[..., None]:
    def score(
        data: Path = typer.Option(...,
                                  help="Project data directory (the MLflow store; shop tables in DATA/shop "
                                            "or DATA unless --tables)."),
        out: str = typer.Option(..., help="Output directory (local path or Hadoop URI on Spark)."),
        engine: str = typer.Option("local", help=ENGINE_HELP),
        spark_master: str = typer.Option(None, "--spark-master", help=MASTER_HELP),
        tables: str = typer.Option(None, help="Where the shop tables are (any Hadoop URI on Spark)."),
        as_of: str = typer.Option(None, help="Score as of this time (default: just after the last row)."),
        k: int = typer.Option(10, min=1, help="Recommendations per customer."),
        campaign: str = typer.Option("default", help="Campaign id (control-group membership)."),
        alias: str = typer.Option("champion", help="Registered model alias to score with."),
        buckets: int = typer.Option(None, min=1, help="Customer buckets on Spark."),
    ) -> None:
        """Score every customer with the champion models: OUT/customers.parquet, OUT/recommendations.parquet,
        OUT/offers.parquet and OUT/_manifest.json (pinned model versions)."""
        from training.scoring import ScoreConfig
        from training.scoring import score as score_job

        cfg = ScoreConfig(as_of=as_of, k=k, campaign=campaign, alias=alias, buckets=buckets)
        r = run(lambda: score_job(data, out, engine=engine, config=cfg, tables=tables, master=spark_master))
        typer.echo(json.dumps({"out": r.out, "engine": r.engine, "as_of": str(r.as_of),
                               "versions": r.versions, "rows": r.rows, "seconds": round(r.seconds, 1)}))

    return score


def register(app: typer.Typer, run: Runner | None = None) -> None:
    """Add ``features`` and ``score`` to ``app``; ``run`` wraps each job (the CLI's error handling)."""
    runner: Runner = run or (lambda fn: fn())
    app.command("features")(features_command(runner))
    app.command("score")(score_command(runner))
