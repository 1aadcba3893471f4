"""The configuration reference in ``docs/configuration.md``, rendered from the schema.

Every option's flag, TOML key, environment variable, type, default, choices,
meaning and first release are read off :class:`~palfrey.config.schema.Config`,
so the reference cannot describe an option that does not exist, miss one that
does, or show a default the code no longer has. What the schema's one-line
help cannot say belongs in the hand-written prose above the markers.

Each option keeps a heading of its own, ``### `--flag```, because other pages
link to it as ``configuration.md#--flag``; the group headings are rendered in
:data:`GROUP_ORDER`, the order ``palfrey --help`` shows them in.

``python -m palfrey.config.reference write docs/configuration.md`` rewrites the
reference between the markers; ``check`` instead exits 1 when it is stale.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import attrs

from palfrey.config.cli import flag_name
from palfrey.config.generated_section import GeneratedSection
from palfrey.config.schema import Option, options
from palfrey.config.sources import env_var_name

START_MARKER = (
    "<!-- configuration-reference:start"
    " (python -m palfrey.config.reference write docs/configuration.md) -->"
)
END_MARKER = "<!-- configuration-reference:end -->"

#: The word each option kind is described with.
KIND_WORDS = {
    "str": "string",
    "path": "path",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "list": "list of strings",
}

#: Each group's name in headings, in the order the reference (and ``--help``) shows them.
#: The reference's ``## <label> options`` links to the prose's ``## <label> notes``.
GROUP_ORDER = {
    "application": "Application",
    "socket": "Socket",
    "protocol": "Protocol",
    "websocket": "WebSocket",
    "lifespan": "Lifespan",
    "limits": "Limits",
    "timeouts": "Timeouts",
    "tls": "TLS",
    "processes": "Processes",
    "logging": "Logging",
    "observability": "Observability",
}

#: What the environment variable of a list option takes, beside the type.
_LIST_ITEM_NOTE = " (one item per line)"

# Characters Markdown would read as emphasis, links or HTML inside a help text.
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_\[\]<>])")


def heading(name: str, option: Option) -> str:
    """The option's heading text: how it is typed, or its Python name when it has no flag."""
    if not option.cli:
        return name
    if name == "app":
        return option.metavar or "APP"
    return flag_name(name)


def anchor(name: str, option: Option) -> str:
    """The fragment other pages link to: the heading as GitHub turns it into an anchor."""
    return re.sub(r"[^\w\- ]", "", heading(name, option).lower()).replace(" ", "-")


def default_value(field: attrs.Attribute[Any]) -> Any:
    """The field's default, calling its factory for list options."""
    default = field.default
    return default.factory() if isinstance(default, attrs.Factory) else default


def default_text(field: attrs.Attribute[Any]) -> str:
    """The default as ``--help`` shows it; ``unset`` means the feature is off or unused."""
    value = default_value(field)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{'true' if value else 'false'}`"
    if isinstance(value, list):
        return f"`{', '.join(value)}`" if value else "none"
    if value == "":
        return '`""`'
    return f"`{value}`"


def _escape(text: str) -> str:
    return _MARKDOWN_SPECIALS.sub(r"\\\1", text)


def _entry(field: attrs.Attribute[Any], option: Option) -> list[str]:
    name = field.name
    lines = [f"### `{heading(name, option)}`", "", _escape(option.help), ""]
    if not option.cli:
        lines += [
            f"- Python only: the `{name}` field of `palfrey.Config`; no flag, TOML key or"
            " environment variable.",
            f"- Type: {KIND_WORDS[option.kind]}",
        ]
    else:
        if name == "app":
            spellings = f"`{heading(name, option)}` (the positional argument)"
        else:
            spellings = f"`{flag_name(name)}`"
            if option.negatable:
                spellings += f", `--no-{name.replace('_', '-')}`"
        note = _LIST_ITEM_NOTE if option.kind == "list" else ""
        lines += [
            f"- Command line: {spellings}",
            f"- TOML: `{name}`, at the top level or in `[{option.group}]`",
            f"- Environment: `{env_var_name(name)}`{note}",
            f"- Type: {KIND_WORDS[option.kind]}",
        ]
    if option.choices is not None:
        lines.append("- Choices: " + ", ".join(f"`{choice}`" for choice in option.choices))
    lines += [f"- Default: {default_text(field)}", f"- Since: {option.since}", ""]
    return lines


def render() -> str:
    """The reference, as Markdown: one section per group, one entry per option."""
    by_group: dict[str, list[tuple[attrs.Attribute[Any], Option]]] = {}
    for field, option in options():
        if option.group not in GROUP_ORDER:
            raise ValueError(f"{field.name}: group {option.group!r} has no place in GROUP_ORDER")
        by_group.setdefault(option.group, []).append((field, option))
    lines: list[str] = []
    for group, label in GROUP_ORDER.items():
        if group not in by_group:
            continue
        notes = f"{label} notes"
        lines += [
            f"## {label} options",
            "",
            f"What the help below leaves out is in [{notes}](#{notes.lower().replace(' ', '-')}).",
            "",
        ]
        for field, option in by_group[group]:
            lines += _entry(field, option)
    return "\n".join(lines)


SECTION = GeneratedSection(
    "the configuration reference", "palfrey.config.reference", START_MARKER, END_MARKER, render
)
#: ``text`` with the section between the markers rendered afresh.
replace_reference = SECTION.replace
#: ``python -m palfrey.config.reference print|write|check [FILE]``.
main = SECTION.main


if __name__ == "__main__":
    sys.exit(main())
