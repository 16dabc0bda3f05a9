"""The champion models from the MLflow registry, read with MLflow's own client.

Serving never imports ``training``: it needs only the registry's names, the alias and the artifacts. The
alias is resolved to a version number first and that version is downloaded, so a promotion that moves the
alias during a download cannot mix two versions of a component (the versions are *pinned*).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from models.bundle import COMPONENTS

PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def registered_name(component: str) -> str:
    """The registry name of a component's model (as ``personalise train`` registers it)."""
    return f"personalise-{component}"


def tracking_uri(data_dir: str | Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the SQLite store that ``personalise train`` keeps in the data
    directory (FileNotFoundError when there is none: serving does not create an empty one)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    db = (Path(data_dir) / "mlflow" / "mlflow.db").resolve()
    if not db.is_file():
        raise FileNotFoundError(f"no MLflow store at {db}: train first (personalise train --data "
                                f"{data_dir}), set MLFLOW_TRACKING_URI, or serve a local bundle (--bundle)")
    return f"sqlite:///{db}"


@contextlib.contextmanager
def _quiet_downloads() -> Iterator[None]:
    """No "Downloading artifacts" progress bars (four per load, at start and at every reload) unless the
    user asked for them with ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR``."""
    before = os.environ.get(PROGRESS_BAR)
    if before is None:
        os.environ[PROGRESS_BAR] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PROGRESS_BAR, None)


def fetch_champion(data_dir: str | Path, alias: str = "champion", dest: str | Path | None = None
                   ) -> tuple[dict[str, Path], dict[str, str]]:
    """Download the ``alias`` version of every component.

    Returns the local path of each component's pickle and the version numbers loaded.

    Examples
    --------
    >>> paths, versions = fetch_champion("var/demo")  # doctest: +SKIP
    >>> versions
    {'recommender': '3', 'churn': '3', 'value': '3', 'offers': '3'}
    """
    import mlflow.artifacts
    from mlflow import MlflowClient

    uri = tracking_uri(data_dir)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = {c: str(client.get_model_version_by_alias(registered_name(c), alias).version)
                for c in COMPONENTS}
    dest = Path(dest or tempfile.mkdtemp(prefix="personalise-models-"))
    paths = {}
    with _quiet_downloads():
        for c, v in versions.items():
            name = registered_name(c)
            # the version's own storage location: a models:/ URI would be resolved in MLflow's global registry
            source = client.get_model_version_download_uri(name, v)
            local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dest / c),
                                                        tracking_uri=uri)
            found = sorted(Path(local).rglob(f"{c}.pkl"))
            if not found:
                raise FileNotFoundError(f"{name} version {v}: no {c}.pkl in its artifacts")
            paths[c] = found[0]
    return paths, versions
