"""The triggers/webhooks configuration file: defaults, and clear errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from serving.trigger_config import ConfigError, load_config

GOOD = """
[triggers]
spend_jump_factor = 2.0
scan_interval_seconds = 60

[webhooks]
max_attempts = 4

[webhooks.urls]
spend_jump = "https://crm.example.com/hooks/jump"
dormancy = "http://127.0.0.1:9000/dormant"
"""
ENV = {"PERSONALISE_WEBHOOK_SECRET": "s" * 32}


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None):
    p = tmp_path / "triggers.toml"
    p.write_text(text)
    return load_config(p, ENV if env is None else env)


def test_defaults_and_a_good_file(tmp_path: Path) -> None:
    d = load_config(None, {})
    assert d.webhooks.urls == {} and d.trigger_config().spend_jump_factor == 1.5
    c = _load(tmp_path, GOOD)
    assert c.trigger_config().spend_jump_factor == 2.0 and c.triggers.scan_interval_seconds == 60
    assert set(c.webhooks.urls) == {"spend_jump", "dormancy"} and c.webhooks.max_attempts == 4
    assert c.secret == b"s" * 32


@pytest.mark.parametrize(("text", "env", "named"), [
    ('[webhooks.urls]\nspend_jmp = "https://x.example/h"', ENV, "webhooks.urls: Value error, unknown trigger "
                                                               "kind 'spend_jmp'"),
    ('[webhooks.urls]\ndormancy = "ftp://x.example/h"', ENV, "'ftp://x.example/h' is not an http(s) URL"),
    ("[triggers]\nspend_jump_factr = 2", ENV, "triggers.spend_jump_factr: Extra inputs are not permitted"),
    ("[triggers]\nchurn_threshold = 1.5", ENV,
     "triggers.churn_threshold: Input should be less than or equal"),
    ("[webhooks]\nmax_attempts = 0", ENV,
     "webhooks.max_attempts: Input should be greater than or equal to 1"),
    ('[webhooks.urls]\ndormancy = "https://x.example/h"', {}, "webhooks.secret_env: webhooks.urls is set"),
    ('secret = "abc"', ENV, "secret: not allowed in the file"),
    ("[triggers\n", ENV, "not valid TOML"),
])
def test_bad_files_name_the_key(tmp_path: Path, text: str, env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, text, env)
    assert "triggers.toml: " in str(e.value) and named in str(e.value)


def test_cli_check_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from personalise_cli import app
    monkeypatch.setenv("PERSONALISE_WEBHOOK_SECRET", "s" * 32)
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(GOOD)
    bad.write_text("[webhooks]\nbackoff_seconds = -1\n")
    r = CliRunner().invoke(app, ["triggers", "check-config", str(good)])
    assert r.exit_code == 0 and '"webhooks": ["dormancy", "spend_jump"]' in r.output
    r = CliRunner().invoke(app, ["triggers", "check-config", str(bad)])
    assert r.exit_code == 2 and "webhooks.backoff_seconds: Input should be greater than 0" in r.output
    r = CliRunner().invoke(app, ["triggers", "check-config", str(tmp_path / "missing.toml")])
    assert r.exit_code == 2 and "cannot read the triggers configuration" in r.output
