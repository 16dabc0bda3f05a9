"""The deployable Bento: bentofile.yaml is valid, in step with pyproject, lists files that exist, and
`bentoml build` succeeds offline (containerising needs a container runtime: not run here); the deploy/
example parses and its triggers file validates."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from serving.trigger_config import load_config

ROOT = Path(__file__).resolve().parents[2]


def _bentofile() -> dict:
    return yaml.safe_load((ROOT / "bentofile.yaml").read_text())


def test_bentofile_matches_pyproject_and_lists_files_that_exist() -> None:
    from bentoml._internal.bento.build_config import BentoBuildConfig
    b = _bentofile()
    BentoBuildConfig.load(b)  # BentoML's own parser accepts it
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert b["python"]["packages"] == deps
    module, cls = b["service"].split(":")
    assert f"class {cls}" in (ROOT / (module.replace(".", "/") + ".py")).read_text()
    for pattern in b["include"]:
        assert glob.glob(str(ROOT / pattern), recursive=True), f"include {pattern!r} matches no file"
    assert (ROOT / b["description"].removeprefix("file: ")).exists()


def test_deploy_example_parses_and_its_triggers_file_validates() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    assert {"postgres", "mlflow", "personalise-a", "personalise-b"} <= set(compose["services"])
    env = compose["services"]["personalise-a"]["environment"]
    assert env["PERSONALISE_DB"].startswith("postgresql://") and env["MLFLOW_TRACKING_URI"].startswith("http://")
    for v in compose["services"]["personalise-a"]["volumes"]:
        src = v.split(":")[0]
        assert not src.startswith(".") or (ROOT / "deploy" / src).exists(), v
    cfg = load_config(ROOT / "deploy" / "triggers.example.toml", {"PERSONALISE_WEBHOOK_SECRET": "x" * 20})
    assert set(cfg.webhooks.urls) == {"spend_jump", "dormancy", "churn_risk"}
    example = (ROOT / "deploy" / ".env.example").read_text()
    keys = ("POSTGRES_PASSWORD", "PERSONALISE_API_KEYS", "PERSONALISE_WEBHOOK_SECRET")
    assert all(k in example for k in keys)


@pytest.mark.slow
def test_bentoml_build_succeeds_offline(tmp_path: Path) -> None:
    env = dict(os.environ, BENTOML_HOME=str(tmp_path / "bentoml"), PIP_NO_INDEX="1", UV_OFFLINE="1",
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")  # any network use fails
    r = subprocess.run([sys.executable, "-m", "bentoml", "build", "--output", "tag", str(ROOT)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    tag = r.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    bento = tmp_path / "bentoml" / "bentos" / name / version
    assert (bento / "env" / "docker" / "Dockerfile").exists()  # what `bentoml containerize` builds from
    assert (bento / "src" / "serving" / "webhooks.py").exists()
    assert (bento / "src" / "triggers_cli.py").exists()
    assert not (bento / "src" / "tests").exists()
    reqs = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "psycopg[binary]" in reqs and "lightgbm" in reqs
