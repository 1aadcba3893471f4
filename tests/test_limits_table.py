"""The limits table in ``docs/limits.md`` is complete, current and backed by real tests.

* Every limit-like option of the schema has a row, and every row's option exists.
* The docs' copy is what ``python -m palfrey.config.limits write`` would write.
* Every test a row names exists, so "proved by" cannot point at nothing.
* Every fixed row's value is the constant's actual value.
"""

from __future__ import annotations

import ast
import importlib
from functools import cache
from pathlib import Path

import pytest

from palfrey.config import limits
from palfrey.config.schema import options

ROOT = Path(__file__).resolve().parent.parent
LIMITS_PAGE = ROOT / "docs" / "limits.md"


@cache
def defined_tests(path: Path) -> frozenset[str]:
    """Every function named ``test_*`` in a test file, at any nesting (test classes too)."""
    tree = ast.parse(path.read_text())
    return frozenset(
        node.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.name.startswith("test_")
    )


def test_every_limit_option_has_a_row() -> None:
    covered = {limit.option for limit in limits.LIMITS}
    missing = [name for name in limits.required_options() if name not in covered]
    assert not missing, f"limit options without a row in palfrey/config/limits.py: {missing}"


def test_the_required_options_include_the_known_limits() -> None:
    """Guards the selection rule itself: a renamed group must not empty it silently."""
    required = set(limits.required_options())
    assert {
        "limit_connections",
        "limit_concurrency",
        "limit_request_body",
        "timeout_tls_handshake",
        "h2_max_concurrent_streams",
        "h3_max_connections",
        "ws_max_size",
        "ws_max_queue",
    } <= required


def test_every_option_row_names_a_real_option_once() -> None:
    names = {field.name for field, _ in options()}
    rows = [limit.option for limit in limits.LIMITS if limit.option is not None]
    assert set(rows) <= names
    assert len(rows) == len(set(rows))


def test_fixed_rows_say_their_value() -> None:
    for limit in limits.LIMITS:
        if limit.option is None:
            assert limit.value, limit.bounds


@pytest.mark.parametrize(
    ("constant", "value"),
    [constant for limit in limits.LIMITS for constant in limit.constants],
)
def test_fixed_values_match_their_constants(constant: str, value: object) -> None:
    module, _, name = constant.partition(":")
    assert getattr(importlib.import_module(module), name) == value


@pytest.mark.parametrize(
    "reference",
    sorted({test for limit in limits.LIMITS for test in limit.tests}),
)
def test_every_proving_test_exists(reference: str) -> None:
    path, _, name = reference.partition("::")
    assert (ROOT / path).is_file(), reference
    assert name in defined_tests(ROOT / path), reference


def test_every_row_names_a_test() -> None:
    assert all(limit.tests for limit in limits.LIMITS)


def test_the_docs_table_is_current() -> None:
    text = LIMITS_PAGE.read_text()
    assert limits.replace_table(text) == text, (
        "docs/limits.md is stale: run python -m palfrey.config.limits write docs/limits.md"
    )


def test_check_mode_reports_a_stale_table(tmp_path: Path) -> None:
    page = tmp_path / "limits.md"
    page.write_text(f"# Limits\n\n{limits.START_MARKER}\n| old |\n{limits.END_MARKER}\n")
    assert limits.main(["check", str(page)]) == 1
    assert limits.main(["write", str(page)]) == 0
    assert limits.main(["check", str(page)]) == 0
    assert "limit_connections" in page.read_text()
