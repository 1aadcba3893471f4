"""The migration guides' tables cover the other server and name only what Palfrey has.

* Every flag of Uvicorn's command line, and every key of Hypercorn's ``Config``,
  has a row. The lists are frozen here, and the installed Uvicorn (pinned in
  the dev extra) and Hypercorn must match them, so a new release that adds a
  flag or key fails here until the guide covers it.
* Every Palfrey flag in the Uvicorn table is one the real parser accepts, and
  every Palfrey key in the Hypercorn table is one the real config-file reader
  accepts.
* A row marked ``same`` names the identically spelled Palfrey option; one
  marked ``renamed`` names another.
* Every test a guide cites as proof exists.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path
from typing import Any

import attrs
import pytest

from palfrey.config.cli import build_parser
from palfrey.config.errors import ConfigError
from palfrey.config.schema import options
from palfrey.config.sources import read_config_file

ROOT = Path(__file__).resolve().parent.parent
UVICORN_GUIDE = ROOT / "docs" / "migrate-from-uvicorn.md"
HYPERCORN_GUIDE = ROOT / "docs" / "migrate-from-hypercorn.md"
START_MARKER = "<!-- migration-table:start -->"
END_MARKER = "<!-- migration-table:end -->"
STATUSES = frozenset(("same", "renamed", "not needed", "not supported yet"))

#: ``uvicorn --help`` of Uvicorn 0.55.0: every option string, and the positional APP.
UVICORN_FLAGS = frozenset(
    (
        "APP",
        "--host",
        "--port",
        "--uds",
        "--fd",
        "--reload",
        "--reload-dir",
        "--reload-include",
        "--reload-exclude",
        "--reload-delay",
        "--workers",
        "--loop",
        "--http",
        "--http2",
        "--ws",
        "--ws-max-size",
        "--ws-max-queue",
        "--ws-ping-interval",
        "--ws-ping-timeout",
        "--ws-per-message-deflate",
        "--lifespan",
        "--interface",
        "--env-file",
        "--log-config",
        "--log-level",
        "--access-log",
        "--no-access-log",
        "--use-colors",
        "--no-use-colors",
        "--proxy-headers",
        "--no-proxy-headers",
        "--server-header",
        "--no-server-header",
        "--date-header",
        "--no-date-header",
        "--forwarded-allow-ips",
        "--root-path",
        "--limit-concurrency",
        "--backlog",
        "--limit-max-requests",
        "--limit-max-requests-jitter",
        "--timeout-keep-alive",
        "--timeout-graceful-shutdown",
        "--timeout-worker-healthcheck",
        "--ssl-keyfile",
        "--ssl-certfile",
        "--ssl-keyfile-password",
        "--ssl-version",
        "--ssl-cert-reqs",
        "--ssl-ca-certs",
        "--ssl-ciphers",
        "--header",
        "--version",
        "--app-dir",
        "--h11-max-incomplete-event-size",
        "--reset-contextvars",
        "--factory",
        "--help",
    )
)

#: The settable attributes of ``hypercorn.config.Config`` in Hypercorn 0.18.0.
HYPERCORN_KEYS = frozenset(
    (
        "access_log_format",
        "accesslog",
        "alpn_protocols",
        "alt_svc_headers",
        "backlog",
        "bind",
        "ca_certs",
        "cert_reqs",
        "certfile",
        "ciphers",
        "daemon",
        "debug",
        "dogstatsd_tags",
        "errorlog",
        "graceful_timeout",
        "group",
        "h11_max_incomplete_size",
        "h11_pass_raw_headers",
        "h2_max_concurrent_streams",
        "h2_max_header_list_size",
        "h2_max_inbound_frame_size",
        "include_date_header",
        "include_server_header",
        "insecure_bind",
        "keep_alive_max_requests",
        "keep_alive_timeout",
        "keyfile",
        "keyfile_password",
        "logconfig",
        "logconfig_dict",
        "logger_class",
        "loglevel",
        "max_app_queue_size",
        "max_requests",
        "max_requests_jitter",
        "pid_path",
        "quic_bind",
        "read_timeout",
        "root_path",
        "server_names",
        "shutdown_timeout",
        "ssl_handshake_timeout",
        "startup_timeout",
        "statsd_host",
        "statsd_prefix",
        "umask",
        "use_reloader",
        "user",
        "verify_flags",
        "verify_mode",
        "websocket_max_message_size",
        "websocket_ping_interval",
        "worker_class",
        "workers",
        "wsgi_max_body_size",
    )
)


@attrs.frozen
class Row:
    """One table row: the other server's names, the status, Palfrey's names."""

    theirs: tuple[str, ...]
    status: str
    ours: tuple[str, ...]


def code_spans(cell: str) -> tuple[str, ...]:
    return tuple(re.findall(r"`([^`]+)`", cell))


def table_rows(path: Path) -> list[Row]:
    text = path.read_text()
    assert START_MARKER in text and END_MARKER in text, f"{path.name} lacks its table markers"
    table = text[text.index(START_MARKER) + len(START_MARKER) : text.index(END_MARKER)]
    rows = []
    for line in table.strip().splitlines()[2:]:  # after the header and its rule
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == 4, f"{path.name}: not a four-column row: {line}"
        rows.append(Row(code_spans(cells[0]), cells[1], code_spans(cells[2])))
    return rows


def palfrey_spellings() -> set[str]:
    """Everything the ``palfrey`` command line accepts, the positional APP included."""
    spellings = {"APP"}
    for action in build_parser()._actions:
        spellings.update(action.option_strings)
    return spellings


def toml_value(kind: str, choices: tuple[str, ...] | None) -> str:
    """Some value of an option's type, written as TOML."""
    if choices is not None:
        return f'"{choices[0]}"'
    values = {"str": '"x"', "path": '"x"', "int": "1", "float": "1.5", "bool": "true"}
    return values.get(kind, "[]")


def accepted_by_the_reader(key: str, tmp_path: Path) -> bool:
    """Whether a TOML file setting ``key`` loads through Palfrey's config-file reader."""
    schema = {field.name: option for field, option in options()}
    option = schema.get(key)
    value = toml_value(option.kind, option.choices) if option is not None else '"x"'
    page = tmp_path / f"{key}.toml"
    page.write_text(f"{key} = {value}\n")
    try:
        return key in read_config_file(str(page))
    except ConfigError:
        return False


def check_statuses(rows: list[Row]) -> list[str]:
    problems = []
    for row in rows:
        if row.status not in STATUSES:
            problems.append(f"{row.theirs}: unknown status {row.status!r}")
        elif row.status == "same" and not set(row.theirs) <= set(row.ours):
            problems.append(f"{row.theirs}: 'same' but Palfrey's column says {row.ours}")
        elif row.status == "renamed" and (not row.ours or set(row.ours) & set(row.theirs)):
            problems.append(f"{row.theirs}: 'renamed' must name a different Palfrey spelling")
    return problems


# Uvicorn.


def live_uvicorn_flags() -> frozenset[str]:
    """The installed Uvicorn's command-line spellings, read from its click command."""
    # ``uvicorn.main`` the attribute is the function; the click command is the module's.
    command: Any = importlib.import_module("uvicorn.main").main
    flags = {"APP", "--help"}
    for param in command.params:
        flags.update(name for name in (*param.opts, *param.secondary_opts) if name.startswith("--"))
    return frozenset(flags)


def test_the_uvicorn_table_covers_every_uvicorn_flag() -> None:
    covered = {name for row in table_rows(UVICORN_GUIDE) for name in row.theirs}
    assert not UVICORN_FLAGS - covered, f"Uvicorn flags without a row: {UVICORN_FLAGS - covered}"
    assert not covered - UVICORN_FLAGS, f"rows for flags Uvicorn lacks: {covered - UVICORN_FLAGS}"


def test_the_frozen_uvicorn_flags_are_the_installed_ones() -> None:
    # uvicorn is in the dev extra, pinned to the version the guide describes.
    live = live_uvicorn_flags()
    assert live == UVICORN_FLAGS, (
        "the installed Uvicorn's flags differ from the guide's list; update"
        " docs/migrate-from-uvicorn.md and UVICORN_FLAGS:"
        f" new {sorted(live - UVICORN_FLAGS)}, gone {sorted(UVICORN_FLAGS - live)}"
    )


def test_the_uvicorn_table_names_only_palfrey_flags() -> None:
    spellings = palfrey_spellings()
    unknown = {name for row in table_rows(UVICORN_GUIDE) for name in row.ours} - spellings
    assert not unknown, f"the Palfrey column names flags Palfrey lacks: {unknown}"


def test_the_uvicorn_statuses_are_honest() -> None:
    problems = check_statuses(table_rows(UVICORN_GUIDE))
    assert not problems, "\n".join(problems)


# Hypercorn.


def live_hypercorn_keys() -> frozenset[str]:
    """The installed Hypercorn's settable ``Config`` attributes."""
    config_class = importlib.import_module("hypercorn.config").Config
    keys = set()
    for name, value in vars(config_class).items():
        if name.startswith("_") or isinstance(value, (classmethod, staticmethod)):
            continue
        if isinstance(value, property):
            if value.fset is not None:
                keys.add(name)
        elif isinstance(value, type) or not callable(value):
            keys.add(name)  # a setting, ``logger_class`` (a class) included
    return frozenset(keys)


def test_the_hypercorn_table_covers_every_hypercorn_key() -> None:
    covered = {name for row in table_rows(HYPERCORN_GUIDE) for name in row.theirs}
    missing = HYPERCORN_KEYS - covered
    assert not missing, f"Hypercorn keys without a row: {missing}"
    assert not covered - HYPERCORN_KEYS, (
        f"rows for keys Hypercorn lacks: {covered - HYPERCORN_KEYS}"
    )


def test_the_frozen_hypercorn_keys_are_the_installed_ones() -> None:
    # Hypercorn comes with quart-trio in the dev extra.
    live = live_hypercorn_keys()
    assert live == HYPERCORN_KEYS, (
        "the installed Hypercorn's Config differs from the guide's list; update"
        " docs/migrate-from-hypercorn.md and HYPERCORN_KEYS:"
        f" new {sorted(live - HYPERCORN_KEYS)}, gone {sorted(HYPERCORN_KEYS - live)}"
    )


def test_the_hypercorn_table_names_only_keys_the_reader_accepts(tmp_path: Path) -> None:
    named = {name for row in table_rows(HYPERCORN_GUIDE) for name in row.ours}
    unknown = {key for key in named if not accepted_by_the_reader(key, tmp_path)}
    assert not unknown, f"the Palfrey column names keys Palfrey's config file rejects: {unknown}"


def test_hypercorn_spellings_palfrey_lacks_are_really_rejected(tmp_path: Path) -> None:
    """A row that is not 'same' claims Palfrey has no key of that name: no silent alias."""
    for row in table_rows(HYPERCORN_GUIDE):
        if row.status != "same":
            for key in row.theirs:
                assert not accepted_by_the_reader(key, tmp_path), key


def test_the_hypercorn_statuses_are_honest() -> None:
    problems = check_statuses(table_rows(HYPERCORN_GUIDE))
    assert not problems, "\n".join(problems)


# Proof.


def cited_tests(path: Path) -> set[str]:
    return set(re.findall(r"`(tests/[\w/]+\.py::\w+)`", path.read_text()))


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }


def test_the_hypercorn_defects_cite_tests() -> None:
    assert len(cited_tests(HYPERCORN_GUIDE)) >= 4


@pytest.mark.parametrize(
    "reference",
    sorted(cited_tests(HYPERCORN_GUIDE) | cited_tests(UVICORN_GUIDE)),
)
def test_every_cited_test_exists(reference: str) -> None:
    file, _, name = reference.partition("::")
    assert (ROOT / file).is_file(), reference
    assert name in defined_tests(ROOT / file), reference
