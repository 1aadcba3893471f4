"""``--check-config``: validate every source, print the effective settings and where each came from.

Nothing is bound and the app is not imported unless ``--check-app`` asks,
so the check is safe to run beside a live server (in CI, or before a
restart).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from palfrey.config.errors import ConfigError
from palfrey.config.importer import load_app
from palfrey.config.schema import Config, options
from palfrey.config.sources import Setting, build_config

EXIT_VALID = 0
EXIT_INVALID = 2


def check_config(settings: Mapping[str, Setting]) -> int:
    """Print the settings as TOML-style lines with their sources; 0 when valid, else 2."""
    try:
        config = build_config(settings)
        if config.check_app:
            _import_app(config)
    except ConfigError as exc:
        print(f"palfrey: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    for field, option in options():
        if not option.cli:
            continue
        setting = settings.get(field.name)
        source = setting.source if setting is not None else "default"
        print(f"{field.name} = {_show(getattr(config, field.name))}  # {source}")
    print("configuration is valid" + (" and the application loads" if config.check_app else ""))
    return EXIT_VALID


def _import_app(config: Config) -> None:
    """Import the app; whatever its module raises (a SyntaxError, a missing setting)
    is the user's mistake to report, not a crash of the check."""
    try:
        load_app(config)
    except ConfigError:
        raise
    except Exception as exc:
        where = f" (line {exc.lineno} of {exc.filename})" if isinstance(exc, SyntaxError) else ""
        raise ConfigError(
            f"importing {config.app!r} raised {type(exc).__name__}: {exc}{where}"
        ) from None


def _show(value: object) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_show(item) for item in value) + "]"
    return repr(value)
