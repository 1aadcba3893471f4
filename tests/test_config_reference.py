"""The configuration reference in ``docs/configuration.md`` is generated, current and complete.

* The page holds exactly what ``python -m palfrey.config.reference write`` writes,
  so a new option, a changed default or new help reaches the docs or fails here.
* Every option has one entry, under its group's heading, giving what a user
  types in each source: the flag spellings are taken from the real parser and
  the TOML keys are loaded through the real config-file reader, not from the
  renderer's own logic.
* Each entry's anchor is ``#--flag``, the one other pages link to.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs
import pytest

from palfrey.config import reference
from palfrey.config.cli import build_parser
from palfrey.config.schema import Option, options
from palfrey.config.sources import env_var_name, read_config_file

ROOT = Path(__file__).resolve().parent.parent
CONFIGURATION = ROOT / "docs" / "configuration.md"

OPTIONS = options()
OPTIONS_BY_NAME = {field.name: option for field, option in OPTIONS}


def generated_section() -> str:
    text = CONFIGURATION.read_text()
    start = text.index(reference.START_MARKER) + len(reference.START_MARKER)
    return text[start : text.index(reference.END_MARKER)]


def entries() -> dict[str, list[tuple[str, str]]]:
    """Option heading -> every (group heading, entry body) it appears under."""
    found: dict[str, list[tuple[str, str]]] = {}
    for group_block in re.split(r"^(?=## )", generated_section(), flags=re.M):
        group_heading, _, group_body = group_block.partition("\n")
        for block in re.split(r"^(?=### )", group_body, flags=re.M)[1:]:
            heading, _, body = block.partition("\n")
            found.setdefault(heading.removeprefix("### ").strip("`"), []).append(
                (group_heading, body)
            )
    return found


def command_line_spellings() -> dict[str, list[str]]:
    """Field name -> how the parser accepts it (``--x``, ``--no-x``, or ``APP``)."""
    spellings: dict[str, list[str]] = {}
    for action in build_parser()._actions:
        if action.option_strings:
            spellings[action.dest] = list(action.option_strings)
        elif action.dest != "help":
            spellings[action.dest] = [str(action.metavar)]
    return spellings


def test_the_page_is_current() -> None:
    text = CONFIGURATION.read_text()
    assert reference.replace_reference(text) == text, (
        "docs/configuration.md is stale: run"
        " python -m palfrey.config.reference write docs/configuration.md"
    )


def test_check_mode_reports_a_stale_reference(tmp_path: Path) -> None:
    page = tmp_path / "configuration.md"
    page.write_text(f"# Configuration\n\n{reference.START_MARKER}\nold\n{reference.END_MARKER}\n")
    assert reference.main(["check", str(page)]) == 1
    assert reference.main(["write", str(page)]) == 0
    assert reference.main(["check", str(page)]) == 0
    assert "### `--timeout-keep-alive`" in page.read_text()


def test_every_option_appears_exactly_once() -> None:
    assert len(OPTIONS) > 30  # the schema really was read
    found = entries()
    expected = {reference.heading(field.name, option) for field, option in OPTIONS}
    assert set(found) == expected
    repeated = {heading: len(places) for heading, places in found.items() if len(places) != 1}
    assert not repeated, f"options with more than one entry: {repeated}"


def expected_texts(field: attrs.Attribute[Any], option: Option, typed: list[str]) -> list[str]:
    """What an entry must say, taken from sources other than the renderer."""
    default: Any = reference.default_value(field)
    texts = [f"`{spelling}`" for spelling in typed]
    texts += [
        f"`{field.name}`",
        f"`[{option.group}]`",
        f"`{env_var_name(field.name)}`",
        reference.KIND_WORDS[option.kind],
        f"Since: {option.since}",
    ]
    if option.choices is not None:
        texts += [f"`{choice}`" for choice in option.choices]
    if default is None:
        texts.append("Default: unset")
    elif isinstance(default, bool):
        texts.append(f"Default: `{str(default).lower()}`")
    elif isinstance(default, list):
        texts.append("Default: none" if not default else f"Default: `{', '.join(default)}`")
    else:
        texts.append(f"Default: `{default if default != '' else chr(34) * 2}`")
    return texts


@pytest.mark.parametrize(("field", "option"), OPTIONS, ids=lambda value: getattr(value, "name", ""))
def test_each_entry_says_how_to_set_the_option(
    field: attrs.Attribute[Any], option: Option, tmp_path: Path
) -> None:
    (group_heading, body), *_ = entries()[reference.heading(field.name, option)]
    assert reference.GROUP_ORDER[option.group] + " options" in group_heading
    if not option.cli:
        assert "Python only" in body
        return
    missing = [
        text
        for text in expected_texts(field, option, command_line_spellings()[field.name])
        if text not in body
    ]
    assert not missing, f"{field.name}: the entry lacks {missing}"
    # The TOML key the entry names is one the config-file reader accepts, in its table.
    page = tmp_path / "key.toml"
    page.write_text(f"[{option.group}]\n{field.name} = {toml_value(field, option)}\n")
    assert field.name in read_config_file(str(page))


def toml_value(field: attrs.Attribute[Any], option: Option) -> str:
    """Some value of the option's type, written as TOML."""
    if option.choices is not None:
        return f'"{option.choices[0]}"'
    return {
        "str": '"x"',
        "path": '"x"',
        "int": "1",
        "float": "1.5",
        "bool": "true",
        "list": "[]",
    }[option.kind]


def test_anchors_are_the_flags() -> None:
    """Other pages link to ``configuration.md#--flag``; the heading must keep producing it."""
    for field, option in OPTIONS:
        if option.cli and field.name != "app":
            assert reference.anchor(field.name, option) == "--" + field.name.replace("_", "-")
    assert reference.anchor("app", OPTIONS_BY_NAME["app"]) == "app"


def test_links_into_the_reference_name_an_entry() -> None:
    """A link to an option's anchor from any page reaches that option's entry."""
    option_anchors = {reference.anchor(name, option) for name, option in OPTIONS_BY_NAME.items()}
    headings = set(entries())
    targets = set()
    for path in (ROOT / "docs").glob("*.md"):
        targets |= set(re.findall(r"configuration\.md#(--[a-z0-9-]+)", path.read_text()))
    assert targets, "no page links into the reference any more; was the pattern changed?"
    assert targets <= option_anchors
    assert targets <= headings


def test_every_kind_and_group_has_words() -> None:
    assert {option.kind for _, option in OPTIONS} <= set(reference.KIND_WORDS)
    assert {option.group for _, option in OPTIONS} <= set(reference.GROUP_ORDER)


def test_help_text_is_escaped() -> None:
    """Help written for ``--help`` must not turn into emphasis or links on the page."""
    body = entries()["--reload-exclude"][0][1]
    assert r"\_\_pycache\_\_" in body
    assert "\\*.py\\[cod\\]" in body
