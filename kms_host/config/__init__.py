"""The daemon's configuration: the sections' dataclasses and the layered loader.

The names below are the package's interface; :mod:`~kms_host.config.sections` declares each
setting with its default and converter, :mod:`~kms_host.config.loading` resolves the layers.
"""

from __future__ import annotations

from kms_host.config.loading import ENV_CONFIG_FILE, ENV_PREFIX, ConfigOverrides, load_config
from kms_host.config.sections import (
    ClockConfig,
    Config,
    CountingConfig,
    CountingMode,
    HostConfig,
    LogConfig,
    MetricsConfig,
    PolicyConfig,
    Prefill,
    ServerConfig,
    StorageConfig,
    WebConfig,
)

__all__ = [
    "ENV_CONFIG_FILE",
    "ENV_PREFIX",
    "ClockConfig",
    "Config",
    "ConfigOverrides",
    "CountingConfig",
    "CountingMode",
    "HostConfig",
    "LogConfig",
    "MetricsConfig",
    "PolicyConfig",
    "Prefill",
    "ServerConfig",
    "StorageConfig",
    "WebConfig",
    "load_config",
]
