"""Settings of one app: arguments, then TASKER_* variables, then defaults."""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from typing import Any

from tasker import defaults
from tasker.exceptions import ConfigurationError

ENV = {
    "database_url": "TASKER_DATABASE_URL",
    "broker_url": "TASKER_BROKER_URL",
    "just_worker": "TASKER_JUST_WORKER",
    "prefetch": "TASKER_PREFETCH",
    "redelivery_window_s": "TASKER_REDELIVERY_WINDOW",
    "rescue_grace_s": "TASKER_RESCUE_GRACE",
    "shutdown_grace_s": "TASKER_SHUTDOWN_GRACE",
    "reconnect_retries": "TASKER_RECONNECT_RETRIES",
    "reconnect_interval_s": "TASKER_RECONNECT_INTERVAL",
    "fqdn": "TASKER_FQDN",
    "keep_success_days": "TASKER_KEEP_SUCCESS_DAYS",
}


def default_fqdn(env: Mapping[str, str] | None = None) -> str:
    """This host's name in every host field (errlog, worker_fqdn, instance,
    master_fqdn): TASKER_FQDN when set, else `socket.getfqdn()`."""
    env = os.environ if env is None else env
    return env.get("TASKER_FQDN", "").strip() or socket.getfqdn()


@dataclasses.dataclass(frozen=True)
class Settings:
    database_url: str = defaults.DATABASE_URL
    broker_url: str = defaults.BROKER_URL
    just_worker: bool = False
    prefetch: int | None = defaults.PREFETCH
    redelivery_window_s: float = defaults.REDELIVERY_WINDOW_S
    rescue_grace_s: float = defaults.RESCUE_GRACE_S
    shutdown_grace_s: float = defaults.SHUTDOWN_GRACE_S
    reconnect_retries: int = defaults.RECONNECT_RETRIES
    reconnect_interval_s: float = defaults.RECONNECT_INTERVAL_S
    fqdn: str = dataclasses.field(default_factory=lambda: default_fqdn())
    keep_success_days: float | None = None

    def __post_init__(self) -> None:
        if self.prefetch is not None and self.prefetch < 0:
            raise ConfigurationError("prefetch must be >= 0")
        for name in ("redelivery_window_s", "rescue_grace_s", "reconnect_interval_s"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be > 0")
        if self.shutdown_grace_s < 0:
            raise ConfigurationError("shutdown_grace_s must be >= 0")
        if self.keep_success_days is not None and self.keep_success_days <= 0:
            raise ConfigurationError("keep_success_days must be > 0")
        if self.reconnect_retries < 0:
            raise ConfigurationError("reconnect_retries must be >= 0")

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **given: Any) -> Settings:
        """Explicit arguments win over TASKER_* variables, which win over defaults."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name, var in ENV.items():
            if given.get(name) is not None:
                values[name] = given[name]
            elif env.get(var, "").strip():
                values[name] = _parse(name, var, env[var].strip(), fields[name].type)
        unknown = set(given) - set(fields)
        if unknown:
            raise ConfigurationError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return cls(**values)


def _parse(name: str, var: str, raw: str, kind: Any) -> Any:
    kind = str(kind)
    try:
        if "bool" in kind:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
    except ValueError:
        raise ConfigurationError(f"{var}={raw!r} is not a valid {kind.split()[0]}") from None
    return raw
