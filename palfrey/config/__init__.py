"""Palfrey's configuration: one schema, three sources (CLI, environment, TOML file)."""

from __future__ import annotations

from palfrey.config.errors import ConfigError
from palfrey.config.schema import Config
from palfrey.config.sources import load_config

__all__ = ["Config", "ConfigError", "load_config"]
