"""The triggers and webhooks configuration file (TOML), validated with errors naming the key.

``PERSONALISE_TRIGGERS_CONFIG`` names the file; without it every setting has its default and no webhooks are
sent. Example (every key optional)::

    [triggers]
    spend_jump_factor = 1.5        # an order above 1.5 x the customer's average order fires spend_jump
    spend_jump_min_orders = 2      # ... once the customer has at least 2 earlier orders
    high_value_return = 100.0      # a return worth at least this fires high_value_return
    dormancy_factor = 2.5          # dormancy line: 2.5 x the customer's usual gap between orders ...
    dormancy_days = 120.0          # ... or 120 days for a customer without a usual gap (one order)
    dormancy_lookback_days = 30.0  # a scan fires lines crossed within the last 30 days only
    churn_threshold = 0.6          # churn_risk fires when a customer's churn score rises to or above this
    scan_interval_seconds = 300    # the service's background scan (dormancy, churn bands); 0 = off

    [webhooks]
    secret_env = "PERSONALISE_WEBHOOK_SECRET"  # the environment variable holding the HMAC key
    max_attempts = 6               # then the delivery is dead-lettered (status "dead", with the last error)
    backoff_seconds = 1.0          # wait after the first failure; doubled after each, at most ...
    backoff_max_seconds = 300.0    # ... this long
    timeout_seconds = 5.0          # per attempt

    [webhooks.urls]                # one URL per trigger kind; kinds without a URL are only in the feed
    spend_jump = "https://crm.example.com/hooks/spend-jump"
    dormancy = "https://crm.example.com/hooks/dormancy"
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from models.triggers import TriggerConfig

ENV_FILE = "PERSONALISE_TRIGGERS_CONFIG"
TRIGGER_KINDS = ("spend_jump", "first_purchase", "high_value_return", "dormancy", "churn_risk")
Positive = Annotated[float, Field(gt=0)]


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or invalid; the message names the file and the key."""


class TriggerSettings(BaseModel):
    """When triggers fire (see :class:`models.triggers.TriggerConfig`) and how often the service scans."""

    model_config = ConfigDict(extra="forbid")
    spend_jump_factor: Positive = 1.5
    spend_jump_min_orders: Annotated[int, Field(ge=1)] = 2
    high_value_return: Positive = 100.0
    dormancy_factor: Positive = 2.5
    dormancy_days: Positive = 120.0
    dormancy_lookback_days: Positive = 30.0
    churn_threshold: Annotated[float, Field(gt=0, le=1)] = 0.6
    scan_interval_seconds: Annotated[float, Field(ge=0)] = 300.0
    """Seconds between the service's background scans; 0 turns the background scan off (``personalise
    triggers scan`` still runs one)."""

    def trigger_config(self) -> TriggerConfig:
        return TriggerConfig(**self.model_dump(exclude={"scan_interval_seconds"}))


class WebhookSettings(BaseModel):
    """Where each trigger kind is posted, how the body is signed, and how failures are retried."""

    model_config = ConfigDict(extra="forbid")
    urls: dict[str, str] = Field(default_factory=dict)
    secret_env: str = "PERSONALISE_WEBHOOK_SECRET"
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 6
    backoff_seconds: Positive = 1.0
    backoff_max_seconds: Positive = 300.0
    timeout_seconds: Positive = 5.0

    @field_validator("urls")
    @classmethod
    def _known_kinds_and_urls(cls, urls: dict[str, str]) -> dict[str, str]:
        for kind, url in urls.items():
            if kind not in TRIGGER_KINDS:
                raise ValueError(f"unknown trigger kind {kind!r}; known: {', '.join(TRIGGER_KINDS)}")
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"{kind}: {url!r} is not an http(s) URL")
        return urls


class LiveConfig(BaseModel):
    """The whole file: ``[triggers]`` and ``[webhooks]``."""

    model_config = ConfigDict(extra="forbid")
    triggers: TriggerSettings = Field(default_factory=TriggerSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    secret: bytes = b""
    """The webhook HMAC key, read from the environment variable ``webhooks.secret_env`` (never from the
    file, so the file can be committed)."""

    def trigger_config(self) -> TriggerConfig:
        return self.triggers.trigger_config()


def parse_config(data: dict[str, Any], source: str, environ: Mapping[str, str] | None = None) -> LiveConfig:
    """The configuration from parsed TOML; :class:`ConfigError` naming ``source`` and each bad key."""
    if "secret" in data:
        raise ConfigError(f"{source}: secret: not allowed in the file; put the key in the environment "
                          f"variable named by webhooks.secret_env")
    try:
        cfg = LiveConfig.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"{source}: {problems}") from None
    env = os.environ if environ is None else environ
    if cfg.webhooks.urls:
        secret = env.get(cfg.webhooks.secret_env, "")
        if len(secret) < 16:
            raise ConfigError(f"{source}: webhooks.secret_env: webhooks.urls is set, so the environment "
                              f"variable {cfg.webhooks.secret_env} must hold the signing key (at least 16 "
                              "characters)")
        cfg.secret = secret.encode()
    return cfg


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> LiveConfig:
    """The file at ``path`` (default: ``$PERSONALISE_TRIGGERS_CONFIG``; neither: all defaults)."""
    env = os.environ if environ is None else environ
    path = path or env.get(ENV_FILE) or None
    if path is None:
        return LiveConfig()
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the triggers configuration: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    return parse_config(data, str(p), env)
