"""Reading options from their three sources and merging them into a :class:`Config`.

Precedence, highest first: the command line, ``PALFREY_*`` environment
variables, the TOML config file, then the defaults declared in the schema.
A value is only taken from a source when that source actually sets it, so
``--port 9000`` beats ``PALFREY_PORT`` which beats ``port`` in the file, while
an option given nowhere keeps its schema default.

Every value remembers where it came from (a :class:`Setting`), so a bad value
is reported against the source the user has to edit, e.g.
``environment variable PALFREY_PORT: expected an integer, got 'abc'`` or
``palfrey.toml: port: must be an integer from 0 to 65535, got 70000``.

The config file
    No file is read unless ``--config PATH`` or ``PALFREY_CONFIG`` names one.
    Every option is a top-level key named exactly like the schema field
    (``port = 8000``, ``app = "pkg.main:app"``). Keys may instead be grouped
    in a table named after the option's group as shown by ``--help``
    (``[application]``, ``[socket]``, ``[protocol]``, ``[timeouts]``, ``[tls]``,
    ...), for example::

        app = "pkg.main:app"

        [timeouts]
        timeout_keep_alive = 3

    A key inside a table must belong to that group, an unknown table is an
    error, and a key may not be set both at the top level and in its table.
    No group is named like an option, so both forms can always be mixed.
    Values must have the option's type: integers for integer options (``true``
    is not an integer), integers or floats for numbers, ``true``/``false`` for
    switches, and an array of strings (or a single string) for list options
    such as ``header``. TOML has no null, so an option whose default is unset
    is simply left out. Relative paths are relative to the working directory,
    not to the file.

Environment variables
    ``PALFREY_`` plus the upper-cased field name (``PALFREY_TIMEOUT_KEEP_ALIVE``).
    Switches accept ``1/0``, ``true/false``, ``yes/no`` and ``on/off`` in any
    case. List options take one item per line, because items such as
    ``header`` values may themselves contain commas or semicolons. Variables set
    to the empty string are ignored, as if unset. ``PALFREY_*`` variables that
    name no option are ignored too, since the environment is shared with other
    programs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from palfrey.config.cli import CommandLine, flag_name, parse_command_line
from palfrey.config.errors import ConfigError, did_you_mean
from palfrey.config.schema import Config, Option, options

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ENV_PREFIX = "PALFREY_"
CONFIG_ENV = "PALFREY_CONFIG"
NO_APP_MESSAGE = (
    "no application given: pass APP as 'module:attribute' or set 'app' in the config file"
)

_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})


@attrs.frozen(slots=True)
class Setting:
    """One option value together with the source label errors should name."""

    value: Any
    source: str


def _user_options() -> dict[str, Option]:
    """Options that can be set from text; ``cli=False`` ones exist only for Python callers."""
    return {field.name: option for field, option in options() if option.cli}


def env_var_name(name: str) -> str:
    """The environment variable that sets the schema field ``name``."""
    return ENV_PREFIX + name.upper()


def _describe_toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def _toml_str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {_describe_toml(value)}")
    return value


def _toml_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {_describe_toml(value)}")
    return value


def _toml_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {_describe_toml(value)}")
    return float(value)


def _toml_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {_describe_toml(value)}")
    return value


def _toml_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TypeError(f"expected an array of strings, got {_describe_toml(value)}")
    return list(value)


def _text_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None


def _text_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None


def _text_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ValueError(f"expected a boolean (true/false, yes/no, on/off, 1/0), got {text!r}")


def _text_list(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _as_given(value: Any) -> Any:
    return value


# Keyed by Option.kind; a kind missing here is a schema bug, caught by the tests.
TOML_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "str": _toml_str,
    "path": _toml_str,
    "int": _toml_int,
    "float": _toml_float,
    "bool": _toml_bool,
    "list": _toml_list,
}
TEXT_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "str": _as_given,
    "path": _as_given,
    "int": _text_int,
    "float": _text_float,
    "bool": _text_bool,
    "list": _text_list,
}


def _convert(converter: Callable[[Any], Any], raw: Any, option: Option, source: str) -> Setting:
    try:
        value = converter(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if option.choices is not None and value not in option.choices:
        raise ConfigError(
            f"{source}: must be one of {', '.join(option.choices)}, got {_describe_toml(value)}"
        )
    return Setting(value, source)


def read_config_file(path: str) -> dict[str, Setting]:
    """The options set in the TOML file at ``path`` (flat keys and group tables)."""
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} not found") from None
    except OSError as exc:
        raise ConfigError(f"config file {path!r} could not be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: invalid TOML: the file is not valid UTF-8") from None

    known = _user_options()
    groups = {option.group for option in known.values()}
    settings: dict[str, Setting] = {}

    def add(key: str, value: Any, source: str) -> None:
        if key in settings:
            raise ConfigError(
                f"{path}: {key!r} is set both at the top level and in [{known[key].group}]"
            )
        settings[key] = _convert(TOML_CONVERTERS[known[key].kind], value, known[key], source)

    for key, value in document.items():
        if isinstance(value, dict) and key in groups:
            for sub_key, sub_value in value.items():
                _check_table_key(path, key, sub_key, known)
                add(sub_key, sub_value, f"{path}: {key}.{sub_key}")
        elif key in known:
            add(key, value, f"{path}: {key}")
        elif isinstance(value, dict):
            raise ConfigError(f"{path}: unknown table [{key}]{did_you_mean(key, groups)}")
        else:
            raise ConfigError(f"{path}: unknown key {key!r}{did_you_mean(key, known)}")
    return settings


def _check_table_key(path: str, table: str, key: str, known: Mapping[str, Option]) -> None:
    if key not in known:
        raise ConfigError(f"{path}: unknown key {key!r} in [{table}]{did_you_mean(key, known)}")
    if known[key].group != table:
        raise ConfigError(
            f"{path}: {key!r} does not belong in [{table}];"
            f" put it in [{known[key].group}] or at the top level"
        )


def read_environment(environ: Mapping[str, str]) -> dict[str, Setting]:
    """The options set by non-empty ``PALFREY_*`` variables in ``environ``."""
    settings: dict[str, Setting] = {}
    for name, option in _user_options().items():
        variable = env_var_name(name)
        text = environ.get(variable, "")
        if text:
            source = f"environment variable {variable}"
            settings[name] = _convert(TEXT_CONVERTERS[option.kind], text, option, source)
    return settings


def read_command_line(command_line: CommandLine) -> dict[str, Setting]:
    """The options the user typed, converted like environment values."""
    known = _user_options()
    settings: dict[str, Setting] = {}
    for name, raw in command_line.values.items():
        option = known[name]
        source = "APP" if name == "app" else flag_name(name)
        # argparse already produced a bool, or a list with one item per repeated flag.
        converter = _as_given if option.kind in ("bool", "list") else TEXT_CONVERTERS[option.kind]
        settings[name] = _convert(converter, raw, option, source)
    return settings


def _reason(exc: Exception, name: str) -> str:
    """A validator's message without the field name, which the source label already gives."""
    message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    for prefix in (f"{name}: ", f"{name} ", f"'{name}' "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def build_config(settings: Mapping[str, Setting]) -> Config:
    """A :class:`Config` from merged settings, with validator errors naming each value's source.

    Each field's validator is run on its own first: constructing ``Config``
    directly would only say which field is wrong, not which source set it.
    """
    fields = attrs.fields_dict(Config)
    known = _user_options()
    for name, setting in settings.items():
        if name not in known:  # only from palfrey.run(): the other sources check their names
            raise ConfigError(f"unknown option {name!r}{did_you_mean(name, known)}")
        field = fields[name]
        if field.validator is None:
            continue
        try:
            field.validator(None, field, setting.value)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{setting.source}: {_reason(exc, name)}") from None
    try:
        return Config(
            **{name: setting.value for name, setting in settings.items()},
            set_options=frozenset(settings),
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None


def keyword_settings(app: Any, keywords: Mapping[str, Any]) -> dict[str, Setting]:
    """``palfrey.run()``'s arguments as settings, each labelled with its keyword.

    Through :func:`build_config` a bad value is then reported as the command
    line reports it, ``port: must be an integer from 0 to 65535, got '8000'``
    beside ``--port: ...``, instead of as the raw validator exception.
    """
    return {name: Setting(value, name) for name, value in {"app": app, **keywords}.items()}


def load_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """The configuration from ``argv`` (default ``sys.argv[1:]``), ``environ`` and the file.

    Raises :class:`ConfigError` for any mistake, including when no source
    names an application.
    """
    return build_config(load_settings(argv, environ))


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, Setting]:
    """Every option some source sets, with the source that won; see :func:`load_config`."""
    environ = os.environ if environ is None else environ
    command_line = parse_command_line(argv)
    config_path = command_line.config_path
    if config_path is None:
        config_path = environ.get(CONFIG_ENV) or None
    settings: dict[str, Setting] = {}
    if config_path is not None:
        settings.update(read_config_file(config_path))
    settings.update(read_environment(environ))
    settings.update(read_command_line(command_line))
    if settings.get("app") is None:
        raise ConfigError(NO_APP_MESSAGE)
    return settings
