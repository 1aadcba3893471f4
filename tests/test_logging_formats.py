"""``--log-format json`` and ``--log-config``: lines parsed back, files applied, errors reported."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from server_process import ServerProcess, palfrey_command, run_to_completion

import palfrey
from palfrey.observability import access_log
from palfrey.observability.log_format import JSONFormatter
from palfrey.server.logging import configure_logging

LOGGERS = ("", "palfrey", "palfrey.error", "palfrey.access")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
HAS_YAML = importlib.util.find_spec("yaml") is not None

SCOPE: dict[str, Any] = {
    "type": "http",
    "http_version": "2",
    "method": "GET",
    "path": "/items",
    "raw_path": b"/items",
    "query_string": b"page=2",
    "client": ("127.0.0.1", 40000),
    "headers": [(b"user-agent", b"agent/2"), (b"x-request-id", b"abc-1")],
}


@pytest.fixture
def bare_palfrey_logger() -> None:
    """No handler on ``palfrey`` yet, as in a fresh ``palfrey`` process.

    It must propagate too: pytest attaches its capture handlers to loggers
    that don't, and an earlier test may have run Palfrey's own set-up.
    """
    logger = logging.getLogger("palfrey")
    logger.handlers.clear()
    logger.propagate = True


def config(**options: Any) -> palfrey.Config:
    return palfrey.Config(app="m:a", **options, set_options=frozenset(options))


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def log_error_and_access() -> None:
    try:
        raise ValueError("the disk is full")
    except ValueError:
        logging.getLogger("palfrey.error").exception("Exception in ASGI application")
    access_log.log_http(SCOPE, 200, 316, 0.0042, [])


# The JSON formatter.


def test_json_error_line() -> None:
    try:
        raise ValueError("the disk is full")
    except ValueError:
        record = logging.getLogger("palfrey.error").makeRecord(
            "palfrey.error", logging.ERROR, __file__, 1, "failed: %s", ("x",), sys.exc_info()
        )
    line = json.loads(JSONFormatter().format(record))
    assert set(line) == {"timestamp", "level", "logger", "message", "exception"}
    assert TIMESTAMP.fullmatch(line["timestamp"])
    assert (line["level"], line["logger"], line["message"]) == (
        "ERROR",
        "palfrey.error",
        "failed: x",
    )
    assert line["exception"].startswith("Traceback")
    assert line["exception"].endswith("ValueError: the disk is full")


def test_json_pid_when_asked() -> None:
    record = logging.LogRecord("palfrey.error", logging.INFO, __file__, 1, "hi", None, None)
    assert json.loads(JSONFormatter(show_pid=True).format(record))["pid"] == os.getpid()
    assert "pid" not in json.loads(JSONFormatter().format(record))


def test_json_access_line_has_every_field(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="palfrey.access"):
        access_log.log_http(SCOPE, 200, 316, 0.0042, [])
        access_log.log_http({**SCOPE, "headers": [], "client": None}, 404, 0, 0.001, [])
    first, second = (json.loads(JSONFormatter().format(record)) for record in caplog.records)
    assert first == {
        "timestamp": first["timestamp"],
        "level": "INFO",
        "logger": "palfrey.access",
        "message": '127.0.0.1:40000 - "GET /items?page=2 HTTP/2" 200 316 4.2ms',
        "method": "GET",
        "path": "/items",
        "query": "page=2",
        "status": 200,
        "bytes": 316,
        "duration": 0.0042,
        "protocol": "HTTP/2",
        "client": "127.0.0.1:40000",
        "user_agent": "agent/2",
        "request_id": "abc-1",
    }
    # What the request didn't send is left out rather than null.
    assert not {"client", "user_agent", "request_id"} & set(second)
    assert second["status"] == 404


# configure_logging without a file.


@pytest.mark.usefixtures("bare_palfrey_logger")
def test_log_format_json_writes_json_lines_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(config(log_format="json"), show_pid=True)
    log_error_and_access()
    error, access = json_lines(capsys.readouterr().err)
    assert error["message"] == "Exception in ASGI application"
    assert "ValueError: the disk is full" in error["exception"]
    assert error["pid"] == access["pid"] == os.getpid()
    assert (access["method"], access["status"], access["request_id"]) == ("GET", 200, "abc-1")


@pytest.mark.usefixtures("bare_palfrey_logger")
def test_log_format_json_with_an_access_log_format(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(config(log_format="json", access_log_format="%(s)s %(b)s %(H)s"))
    access_log.log_http(SCOPE, 200, 316, 0.0042, [])
    (line,) = json_lines(capsys.readouterr().err)
    assert line["message"] == "200 316 HTTP/2"
    assert line["bytes"] == 316


@pytest.mark.usefixtures("bare_palfrey_logger")
def test_text_lines_with_pid(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(config(), show_pid=True)
    access_log.log_http(SCOPE, 200, 316, 0.0042, [])
    assert capsys.readouterr().err.endswith(
        f'INFO    [{os.getpid()}] 127.0.0.1:40000 - "GET /items?page=2 HTTP/2" 200 316 4.2ms\n'
    )


@pytest.mark.usefixtures("bare_palfrey_logger")
def test_palfreys_own_text_handler_skips_the_fields(caplog: pytest.LogCaptureFixture) -> None:
    configure_logging(config())
    logging.getLogger("palfrey").addHandler(caplog.handler)
    access_log.log_http(SCOPE, 200, 316, 0.0042, [])
    (record,) = caplog.records
    assert not hasattr(record, "method")


def test_an_embedding_programs_handler_is_kept(caplog: pytest.LogCaptureFixture) -> None:
    logging.getLogger("palfrey").handlers[:] = [caplog.handler]
    configure_logging(config(log_format="json"))
    assert logging.getLogger("palfrey").handlers == [caplog.handler]
    access_log.log_http(SCOPE, 200, 316, 0.0042, [])
    assert caplog.records[0].request_id == "abc-1"  # type: ignore[attr-defined]


def test_no_access_log_disables_the_logger() -> None:
    configure_logging(config(access_log=False))
    assert not access_log.enabled()


# --log-config.


def dict_config(output: Path) -> dict[str, Any]:
    return {
        "version": 1,
        "formatters": {
            "access": {"format": "ACCESS %(method)s %(status)s %(request_id)s | %(message)s"},
            "plain": {"format": "%(levelname)s %(name)s | %(message)s"},
        },
        "handlers": {
            "access": {
                "class": "logging.FileHandler",
                "filename": str(output),
                "formatter": "access",
            },
            "plain": {
                "class": "logging.FileHandler",
                "filename": str(output),
                "formatter": "plain",
            },
        },
        "loggers": {
            "palfrey.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
            "palfrey": {"handlers": ["plain"], "level": "INFO", "propagate": False},
        },
    }


INI_CONFIG = """\
[loggers]
keys=root,access

[handlers]
keys=file

[formatters]
keys=access

[logger_root]
level=WARNING
handlers=

[logger_access]
level=INFO
handlers=file
propagate=0
qualname=palfrey.access

[handler_file]
class=FileHandler
formatter=access
args=({output!r},)

[formatter_access]
format=INI %(method)s %(path)s %(status)s %(user_agent)s | %(message)s
"""


def flush_file_handlers() -> None:
    for name in LOGGERS:
        for handler in logging.getLogger(name).handlers:
            handler.flush()


@pytest.mark.usefixtures("bare_palfrey_logger")
def test_json_dict_config_wins_over_log_format(tmp_path: Path) -> None:
    output = tmp_path / "palfrey.log"
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(dict_config(output)))
    configure_logging(config(log_config=str(path), log_format="json"))
    log_error_and_access()
    flush_file_handlers()
    lines = output.read_text().splitlines()
    assert lines[0] == "ERROR palfrey.error | Exception in ASGI application"
    assert (
        lines[-1]
        == 'ACCESS GET 200 abc-1 | 127.0.0.1:40000 - "GET /items?page=2 HTTP/2" 200 316 4.2ms'
    )


@pytest.mark.usefixtures("bare_palfrey_logger")
def test_ini_file_config(tmp_path: Path) -> None:
    output = tmp_path / "access.log"
    path = tmp_path / "logging.ini"
    path.write_text(INI_CONFIG.format(output=str(output)))
    configure_logging(config(log_config=str(path), access_log_format="%(s)s %(M)sms"))
    access_log.log_http(SCOPE, 201, 1, 0.0042, [])
    flush_file_handlers()
    assert output.read_text() == "INI GET /items 201 agent/2 | 201 4ms\n"
    # Loggers that existed before the file was applied keep working.
    assert not logging.getLogger("palfrey.error").disabled


def test_log_level_given_with_a_log_config_still_applies(tmp_path: Path) -> None:
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(dict_config(tmp_path / "out.log")))
    configure_logging(config(log_config=str(path)))
    assert logging.getLogger("palfrey").level == logging.INFO  # the file's
    configure_logging(config(log_config=str(path), log_level="debug"))
    assert logging.getLogger("palfrey").level == logging.DEBUG


@pytest.mark.skipif(not HAS_YAML, reason="PyYAML is not installed")
def test_yaml_dict_config(tmp_path: Path) -> None:
    import yaml  # noqa: PLC0415

    output = tmp_path / "out.log"
    path = tmp_path / "logging.yaml"
    path.write_text(yaml.safe_dump(dict_config(output)))
    configure_logging(config(log_config=str(path)))
    access_log.log_http(SCOPE, 200, 1, 0.0, [])
    flush_file_handlers()
    assert output.read_text().startswith("ACCESS GET 200 abc-1 | ")


def bad_log_config(tmp_path: Path) -> list[tuple[str, str]]:
    """(file, what the error says) for files that can't be applied."""
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "wrong.json").write_text(
        '{"version": 1, "handlers": {"h": {"class": "nope.Nope"}}}'
    )
    (tmp_path / "broken.ini").write_text("[loggers]\nkeys=root\n")
    cases = [
        ("broken.json", "JSONDecodeError"),
        ("list.json", "a dictConfig must be a mapping, not list"),
        ("wrong.json", "ValueError: Unable to configure handler 'h'"),
        ("broken.ini", "KeyError: 'formatters'"),
    ]
    if not HAS_YAML:
        (tmp_path / "logging.yaml").write_text("version: 1\n")
        cases.append(("logging.yaml", "needs PyYAML"))
    return cases


def test_a_bad_log_config_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, message in bad_log_config(tmp_path):
        path = str(tmp_path / name)
        with pytest.raises(SystemExit) as exited:
            configure_logging(config(log_config=path))
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"palfrey: error: log_config {path!r}"), err
        assert message in err, err
        assert err.count("\n") == 1, err


def test_cli_reports_a_missing_log_config(tmp_path: Path) -> None:
    environ = {name: value for name, value in os.environ.items() if not name.startswith("PALFREY")}
    path = tmp_path / "nowhere.json"
    result = run_to_completion(
        palfrey_command("--log-config", str(path), "palfrey.demo:app"), env=environ
    )
    assert result.returncode == 2, result
    assert result.stderr == f"palfrey: error: --log-config: file {str(path)!r} does not exist\n"


def test_a_missing_log_config_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"log_config file .* does not exist"):
        palfrey.Config(app="x:y", log_config=str(tmp_path / "missing.ini"))


# A whole process.


def test_a_json_process_writes_only_json_lines() -> None:
    server = ServerProcess(
        palfrey_command(
            *("--app-dir", "tests", "--host", "127.0.0.1", "--port", "0"),
            *("--log-format", "json", "process_apps:pid"),
        )
    )
    try:
        port = int(server.wait_for(r"Palfrey running on http://127\.0\.0\.1:(\d+)").group(1))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(
                b"GET /where?x=1 HTTP/1.1\r\nHost: t\r\nX-Request-ID: trace-7\r\n"
                b"User-Agent: probe\r\nConnection: close\r\n\r\n"
            )
            while conn.recv(65536):
                pass
        server.wait_for(r'"logger": "palfrey\.access"')
        assert server.stop() == 0
    finally:
        server.cleanup()
    lines = json_lines(server.output)
    assert all(TIMESTAMP.fullmatch(line["timestamp"]) for line in lines)
    (access,) = (line for line in lines if line["logger"] == "palfrey.access")
    assert {key: access[key] for key in ("method", "path", "query", "status", "protocol")} == {
        "method": "GET",
        "path": "/where",
        "query": "x=1",
        "status": 200,
        "protocol": "HTTP/1.1",
    }
    assert (access["request_id"], access["user_agent"]) == ("trace-7", "probe")
    assert access["client"].startswith("127.0.0.1:")
    assert any(line["message"].startswith("Palfrey running on") for line in lines)
    assert access["bytes"] == len(str(server.pid))
