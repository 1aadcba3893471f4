from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from palfrey import cli
from palfrey.cli import main
from palfrey.config import Config, ConfigError, load_config
from palfrey.config.cli import build_parser, flag_name, parse_command_line, version
from palfrey.config.schema import options

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI_OPTIONS = [
    pytest.param(field, option, id=field.name)
    for field, option in options()
    if option.cli and field.name != "app"
]


@pytest.fixture
def help_text(monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping, so help texts can be matched whole
    return build_parser().format_help()


def option_strings() -> set[str]:
    return {s for action in build_parser()._actions for s in action.option_strings}


@pytest.mark.parametrize(("field", "option"), CLI_OPTIONS)
def test_every_option_has_a_flag(field, option):
    flags = option_strings()
    assert flag_name(field.name) in flags
    if option.kind == "bool" and option.negatable:
        assert "--no-" + field.name.replace("_", "-") in flags


@pytest.mark.parametrize(("field", "option"), CLI_OPTIONS)
def test_every_option_is_in_help_with_its_default(help_text, field, option):
    flat = " ".join(help_text.split())
    assert flag_name(field.name) in flat
    assert option.help + " (default: " in flat
    if option.choices:
        assert "{" + ",".join(option.choices) + "}" in flat


def test_help_shows_defaults(help_text):
    flat = help_text
    assert "(0 picks a free port). (default: 8000)" in flat
    assert "(default: unset)" in flat
    assert "Send a 'date' response header. (default: true)" in flat
    assert flat.count("(default:") == len(CLI_OPTIONS) + 1  # + --config


def test_help_groups_options_by_schema_group(help_text):
    for group in {option.group for _field, option in options()}:
        assert f"{group} options:" in help_text


def test_app_is_positional(help_text):
    assert parse_command_line(["pkg:app"]).values == {"app": "pkg:app"}
    assert "APP" in help_text


def test_no_field_collides_with_builtin_flags():
    names = {field.name for field, _option in options()}
    assert not names & {"config", "version", "help", "h"}


def test_only_typed_options_are_returned():
    assert parse_command_line([]).values == {}
    assert parse_command_line(["--port", "1"]).values == {"port": "1"}


def test_config_flag():
    command_line = parse_command_line(["--config", "x.toml", "m:a"])
    assert command_line.config_path == "x.toml"
    assert "config" not in command_line.values


class TestBooleans:
    def test_positive(self):
        assert parse_command_line(["--access-log"]).values == {"access_log": True}

    def test_negative(self):
        assert parse_command_line(["--no-access-log"]).values == {"access_log": False}

    def test_last_one_wins(self):
        assert parse_command_line(["--no-factory", "--factory"]).values == {"factory": True}

    def test_negation_reaches_config(self):
        assert load_config(["m:a", "--no-proxy-headers"], {}).proxy_headers is False


def test_repeated_header():
    config = load_config(["m:a", "--header", "x-a:1", "--header", "x-b: 2, 3"], {})
    assert config.header == ["x-a:1", "x-b: 2, 3"]
    assert config.extra_headers() == [(b"x-a", b"1"), (b"x-b", b"2, 3")]


class TestUsageErrors:
    def test_unknown_flag_suggests(self):
        with pytest.raises(
            ConfigError, match=r"^unknown option '--prot' \(did you mean '--port'\?\)$"
        ):
            parse_command_line(["--prot", "80"])

    def test_unknown_flag_with_value(self):
        with pytest.raises(ConfigError, match=r"^unknown option '--prot' \(did you mean"):
            parse_command_line(["--prot=80"])

    def test_abbreviations_are_not_accepted(self):
        with pytest.raises(ConfigError, match=r"unknown option '--por'"):
            parse_command_line(["--por", "80"])

    def test_extra_positional(self):
        with pytest.raises(ConfigError, match=r"^unexpected argument 'b:c'$"):
            parse_command_line(["a:b", "b:c"])

    def test_missing_value(self):
        with pytest.raises(ConfigError, match="--port"):
            parse_command_line(["--port"])


class TestMain:
    def test_version(self, capsys):
        assert main(["--version"]) == 0
        out = capsys.readouterr().out
        assert out == f"palfrey {version()}\n"
        assert out.startswith("palfrey ")

    def test_help(self, capsys):
        assert main(["--help"]) == 0
        assert "--timeout-keep-alive" in capsys.readouterr().out

    def test_config_error_is_one_line(self, capsys):
        assert main(["--port", "nope", "x:y"]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == "palfrey: error: --port: expected an integer, got 'nope'\n"

    def test_runs_the_server(self, monkeypatch):
        seen: list[Config] = []

        def run_config(config: Config) -> int:
            seen.append(config)
            return 7

        monkeypatch.setattr(cli, "run_config", run_config)
        assert main(["pkg:app", "--port", "1234"]) == 7
        assert seen[0].app == "pkg:app"
        assert seen[0].port == 1234

    def test_runner_not_reached_on_error(self, monkeypatch):
        monkeypatch.setattr(cli, "run_config", lambda _config: pytest.fail("runner called"))
        assert main([]) == 2

    def test_entrypoint_exits_with_status(self, monkeypatch):
        monkeypatch.setattr(cli, "main", lambda: 3)
        with pytest.raises(SystemExit) as info:
            cli.entrypoint()
        assert info.value.code == 3


def test_parser_uses_suppress_defaults():
    for action in build_parser()._actions:
        if action.dest not in ("help", "version"):
            assert action.default is argparse.SUPPRESS, action.dest


def test_python_dash_m_reports_error_without_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "palfrey", "--port", "nope", "x:y"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("palfrey: error: ")


class TestRunKeywordErrors:
    """``palfrey.run()`` reports a bad keyword as the command line reports the flag,
    labelled with the keyword: one sentence, never attrs' exception tuple."""

    def error(self, monkeypatch, app="m:a", **options) -> str:
        monkeypatch.setattr(cli, "run_config", lambda _config: pytest.fail("runner called"))
        with pytest.raises(SystemExit) as info:
            cli.run(app, **options)
        assert isinstance(info.value.code, str)
        return info.value.code

    def test_choice(self, monkeypatch):
        assert self.error(monkeypatch, loop="uvloop") == (
            "palfrey: error: loop: must be one of trio, asyncio, got 'uvloop'"
        )

    def test_same_reason_as_the_command_line(self, monkeypatch, capsys):
        assert main(["m:a", "--loop", "uvloop"]) == 2
        flag_reason = capsys.readouterr().err.split("--loop: ", 1)[1].strip()
        assert self.error(monkeypatch, loop="uvloop").endswith(f"loop: {flag_reason}")

    def test_type(self, monkeypatch):
        assert self.error(monkeypatch, port="8000") == (
            "palfrey: error: port: must be an integer from 0 to 65535, got '8000'"
        )

    def test_access_log_format(self, monkeypatch):
        assert self.error(monkeypatch, access_log_format="%(zz)s") == (
            "palfrey: error: access_log_format: unknown access log atom '%(zz)s'"
        )

    def test_missing_certificate(self, monkeypatch, tmp_path):
        missing = str(tmp_path / "missing.pem")
        assert self.error(monkeypatch, ssl_certfile=missing) == (
            f"palfrey: error: ssl_certfile: file {missing!r} does not exist"
        )

    def test_unknown_keyword_suggests(self, monkeypatch):
        assert self.error(monkeypatch, prot=8000) == (
            "palfrey: error: unknown option 'prot' (did you mean 'port'?)"
        )

    def test_combination(self, monkeypatch):
        assert self.error(monkeypatch, app=lambda: None, workers=2).startswith(
            "palfrey: error: reload and workers need the application as an import string"
        )

    def test_app_object_and_options_reach_the_runner(self, monkeypatch):
        async def app(scope, receive, send):
            pass

        seen: list[Config] = []
        monkeypatch.setattr(cli, "run_config", lambda config: seen.append(config) or 0)
        cli.run(app, port=1234, loop="trio")
        assert seen[0].app is app
        assert seen[0].port == 1234
        assert {"port", "loop"} <= seen[0].set_options
