"""The ``palfrey`` command line, generated from the schema.

No flag is written out by hand: every field of :class:`~palfrey.config.schema.Config`
becomes ``--name-with-dashes`` here, so a new option appears on the command
line, in ``--help`` and in the config file at the same time.

Every option is registered with ``default=argparse.SUPPRESS``; the parsed
namespace therefore holds only what the user actually typed, which is what lets
the command line override the environment and the config file without its
defaults clobbering them.  Values are kept as the typed strings and converted
by :mod:`palfrey.config.sources`, so a bad ``--port`` and a bad
``PALFREY_PORT`` produce the same error wording.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import attrs

from palfrey._version import __version__
from palfrey.config.errors import ConfigError, did_you_mean
from palfrey.config.schema import Option, options

_KIND_METAVARS = {"int": "INT", "float": "NUMBER", "path": "PATH", "list": "VALUE", "str": "TEXT"}


@attrs.frozen(slots=True)
class CommandLine:
    """What the user typed: option values as raw strings/bools, plus ``--config``."""

    values: dict[str, Any]
    config_path: str | None


def flag_name(name: str) -> str:
    """The ``--flag`` spelling of a schema field, also used to label CLI errors."""
    return "--" + name.replace("_", "-")


def version() -> str:
    """The version of the code that is running.

    Read from the source tree rather than ``importlib.metadata``: that is the
    code actually running even when another copy is installed, and it keeps
    building the parser free of the metadata machinery's imports.
    """
    return __version__


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors become :class:`ConfigError`.

    argparse would print the whole usage block and exit; raising instead lets
    :func:`main` report every mistake, from any source, as the same one line.
    """

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def _format_default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(value) if value else "none"
    if value == "":
        return '""'
    return str(value)


def _help_text(field: attrs.Attribute[Any], option: Option) -> str:
    default = field.default.factory() if isinstance(field.default, attrs.Factory) else field.default
    text = f"{option.help} (default: {_format_default(default)})"
    return text.replace("%", "%%")


def _add_option(
    group: argparse._ArgumentGroup, field: attrs.Attribute[Any], option: Option
) -> None:
    flag = flag_name(field.name)
    help_text = _help_text(field, option)
    if option.kind == "bool":
        action = argparse.BooleanOptionalAction if option.negatable else "store_true"
        group.add_argument(flag, dest=field.name, action=action, help=help_text)
        return
    if option.choices is not None:
        metavar = "{" + ",".join(option.choices) + "}"
    else:
        metavar = option.metavar or _KIND_METAVARS.get(option.kind, "VALUE")
    action = "append" if option.kind == "list" else "store"
    group.add_argument(flag, dest=field.name, action=action, metavar=metavar, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    """The full ``palfrey`` parser, one argument group per schema group."""
    parser = _Parser(
        prog="palfrey",
        description="Run an ASGI (or WSGI) application on Palfrey.",
        epilog=(
            "Every option can also be set as a key in the --config TOML file or as a"
            " PALFREY_<NAME> environment variable (for example PALFREY_PORT). The command"
            " line overrides the environment, which overrides the config file."
        ),
        argument_default=argparse.SUPPRESS,
        allow_abbrev=False,
    )
    parser.add_argument(
        "--version", action="version", version=f"palfrey {version()}", help="Show the version."
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="TOML config file to read; also PALFREY_CONFIG. (default: no file is read)",
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for field, option in options():
        if not option.cli:
            continue
        if field.name == "app":
            parser.add_argument("app", nargs="?", metavar=option.metavar or "APP", help=option.help)
            continue
        if option.group not in groups:
            groups[option.group] = parser.add_argument_group(f"{option.group} options")
        _add_option(groups[option.group], field, option)
    return parser


def parse_command_line(argv: Sequence[str] | None = None) -> CommandLine:
    """Parse ``argv`` (default ``sys.argv[1:]``) into only the options actually given.

    ``--help`` and ``--version`` print and raise :class:`SystemExit` as usual;
    every other mistake raises :class:`ConfigError`.
    """
    parser = build_parser()
    namespace, extras = parser.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    if extras:
        _reject_extras(parser, extras)
    values = dict(vars(namespace))
    config_path = values.pop("config", None)
    return CommandLine(values=values, config_path=config_path)


def _reject_extras(parser: argparse.ArgumentParser, extras: list[str]) -> NoReturn:
    first = extras[0]
    if first.startswith("--"):
        flags = [s for action in parser._actions for s in action.option_strings]
        typed = first.split("=", 1)[0]
        raise ConfigError(f"unknown option {typed!r}{did_you_mean(typed, flags)}")
    raise ConfigError(f"unexpected argument {first!r}")
