"""Logging set-up: stdlib ``logging``, synchronous, on ``palfrey.*`` loggers."""

from __future__ import annotations

import json
import logging
import logging.config
import sys
from pathlib import Path
from typing import Any

from palfrey.config.errors import ConfigError
from palfrey.config.schema import Config
from palfrey.observability import access_log
from palfrey.observability.log_format import JSONFormatter

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

_LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}

#: The exit status of a configuration error, as the command line uses it.
_EXIT_CONFIG_ERROR = 2


def configure_logging(config: Config, *, show_pid: bool = False) -> None:
    """Set up the ``palfrey`` loggers as ``config`` says.

    With ``log_config``, that file decides handlers and formats (and levels,
    unless ``log_level`` was given too). Otherwise the ``palfrey`` logger gets
    a stderr handler in ``log_format``, unless the embedding program already
    gave it one. ``show_pid`` puts the process id on every line, so the lines
    of several workers (and their supervisor) can be told apart.

    A log configuration file that can't be applied ends the process with one
    line on stderr and exit status 2, as any other configuration error: it
    is found before anything is served.
    """
    palfrey = logging.getLogger("palfrey")
    own_text_handler = (
        config.log_config is None and config.log_format == "text" and not palfrey.handlers
    )
    access_log.use_format(config.access_log_format, fields=not own_text_handler)
    if config.log_config is not None:
        try:
            apply_log_config(config.log_config)
        except ConfigError as exc:
            print(f"palfrey: error: {exc}", file=sys.stderr)
            raise SystemExit(_EXIT_CONFIG_ERROR) from None
        if "log_level" in config.set_options:
            palfrey.setLevel(_LEVELS[config.log_level])
    else:
        palfrey.setLevel(_LEVELS[config.log_level])
        if not palfrey.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(_formatter(config.log_format, show_pid=show_pid))
            palfrey.addHandler(handler)
            palfrey.propagate = False
    logging.getLogger("palfrey.access").disabled = not config.access_log


def _formatter(log_format: str, *, show_pid: bool) -> logging.Formatter:
    if log_format == "json":
        return JSONFormatter(show_pid=show_pid)
    pid = "[%(process)d] " if show_pid else ""
    return logging.Formatter(f"%(asctime)s %(levelname)-7s {pid}%(message)s")


def apply_log_config(path: str) -> None:
    """Apply a logging configuration file, as Uvicorn reads ``--log-config``.

    ``.json`` and ``.yaml``/``.yml`` files are ``dictConfig`` dictionaries,
    anything else a ``fileConfig`` INI file. Loggers that already exist (the
    ``palfrey.*`` ones) stay enabled unless the file says
    ``disable_existing_loggers``. Any failure is a :class:`ConfigError`
    naming the file: the user's file is the only thing to fix.
    """
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".json":
            with open(path, encoding="utf-8") as file:
                _dict_config(json.load(file))
        elif suffix in (".yaml", ".yml"):
            _dict_config(_load_yaml(path))
        else:
            _file_config(path)
    except ConfigError:
        raise
    except OSError as exc:
        raise ConfigError(f"log_config {path!r}: {exc.strerror or exc}") from None
    except Exception as exc:  # whatever the file got wrong, it is the user's to fix
        reason = str(exc).splitlines()[0] if str(exc) else ""
        raise ConfigError(
            f"log_config {path!r} could not be applied: {type(exc).__name__}: {reason}"
        ) from None


def _dict_config(value: Any) -> None:
    if not isinstance(value, dict):
        raise TypeError(f"a dictConfig must be a mapping, not {type(value).__name__}")
    value.setdefault("disable_existing_loggers", False)
    logging.config.dictConfig(value)


def _file_config(path: str) -> None:
    # fileConfig's own message for a missing file differs between Python versions.
    if not Path(path).is_file():
        raise ConfigError(f"log_config {path!r}: no such file")
    logging.config.fileConfig(path, disable_existing_loggers=False)


def _load_yaml(path: str) -> Any:
    try:
        import yaml  # noqa: PLC0415 - optional, needed only for a YAML log config
    except ImportError:
        raise ConfigError(
            f"log_config {path!r} is YAML, which needs PyYAML: pip install pyyaml"
        ) from None
    with open(path, encoding="utf-8") as file:
        return yaml.safe_load(file)
