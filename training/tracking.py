"""Where MLflow keeps a project's runs and models: ``DATA/mlflow`` (never the current directory).

The tracking store is ``DATA/mlflow/mlflow.db`` (SQLite) and the artifacts go to ``DATA/mlflow/artifacts``,
unless the user points ``MLFLOW_TRACKING_URI`` at a store of their own (whose artifacts are then theirs to
place). MLflow records artifact locations as absolute URIs; so that a project folder can be moved (or
copied to another machine), :func:`setup_mlflow` resolves the artifact root at every start and, when the
store still names the folder it was created in, rewrites that prefix to the folder's current place.

Why not trust the environment variable alone: MLflow 3's ``set_tracking_uri`` sets ``MLFLOW_TRACKING_URI``
itself, so after one setup the variable names our own store; a URI this module set (or this data
folder's own store) is therefore never taken for the user's choice.

Example
-------
>>> uri = setup_mlflow(Path("var/demo"))        # doctest: +SKIP
>>> uri                                         # doctest: +SKIP
'sqlite:////home/me/shop/var/demo/mlflow/mlflow.db'
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import sqlalchemy as sa

log = logging.getLogger(__name__)
EXPERIMENT = "personalise"
ENV = "MLFLOW_TRACKING_URI"
_SET_HERE: set[str] = set()
"""Tracking URIs this process set (MLflow copies them into ``MLFLOW_TRACKING_URI``)."""
_LOCATIONS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
              ("logged_models", "artifact_location"), ("model_versions", "storage_location"),
              ("model_versions", "source"))
"""Every column of MLflow's SQL store that holds an artifact URI."""


def own_tracking_uri(data_dir: Path) -> str:
    """The project's own store: SQLite inside ``DATA/mlflow`` (created if missing)."""
    d = Path(data_dir) / "mlflow"
    d.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(d / 'mlflow.db').resolve()}"


def artifact_root(data_dir: Path) -> str:
    """Where the project's artifacts go: ``DATA/mlflow/artifacts``, as a file URI."""
    return (Path(data_dir) / "mlflow" / "artifacts").resolve().as_uri()


def user_tracking_uri(data_dir: Path) -> str | None:
    """``MLFLOW_TRACKING_URI`` when the user set it (not when MLflow copied one of ours into it)."""
    env = os.environ.get(ENV)
    if not env or env in _SET_HERE or env == own_tracking_uri(data_dir):
        return None
    return env


def tracking_uri_for(data_dir: Path) -> str:
    """The user's ``MLFLOW_TRACKING_URI`` if they set one, else the SQLite store inside the data folder."""
    return user_tracking_uri(data_dir) or own_tracking_uri(data_dir)


def setup_mlflow(data_dir: Path, experiment: str = EXPERIMENT) -> str:
    """Point MLflow's tracking and registry at the project's store and select ``experiment`` (created with
    its artifacts under ``DATA/mlflow/artifacts`` in the project's own store). Returns the tracking URI."""
    import mlflow
    data_dir = Path(data_dir)
    user = user_tracking_uri(data_dir)
    uri = user or own_tracking_uri(data_dir)
    _SET_HERE.add(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    root = None if user else artifact_root(data_dir)
    found = mlflow.get_experiment_by_name(experiment)  # creates the store's tables when new
    if found is None:
        mlflow.create_experiment(experiment, artifact_location=root)
    elif root is not None and found.artifact_location != root:
        relocate(uri, found.artifact_location, root)
    mlflow.set_experiment(experiment)
    return uri


def relocate(uri: str, old_root: str, new_root: str) -> int:
    """Rewrite every artifact URI of the store at ``uri`` that starts with ``old_root`` to start with
    ``new_root`` instead (the project folder was moved). Returns the number of values rewritten."""
    engine = sa.create_engine(uri)
    try:
        tables = set(sa.inspect(engine).get_table_names())
        n = 0
        with engine.begin() as conn:
            for table, column in _LOCATIONS:
                if table not in tables:
                    continue
                n += _rewrite_prefix(conn, sa.table(table, sa.column(column)), column, old_root, new_root)
    finally:
        engine.dispose()
    log.warning("the project folder moved: %d artifact locations rewritten from %s to %s",
                n, old_root, new_root)
    return n


def _rewrite_prefix(conn: sa.Connection, t: sa.TableClause, column: str, old: str, new: str) -> int:
    col = t.c[column]
    sel = sa.select(col).where(col.startswith(old, autoescape=True)).distinct()
    n = 0
    for (value,) in conn.execute(sel).all():
        if len(value) > len(old) and value[len(old)] != "/":
            continue  # a sibling folder whose name starts like the old root's
        res = conn.execute(sa.update(t).where(col == value).values({column: new + value[len(old):]}))
        n += res.rowcount
    return n
