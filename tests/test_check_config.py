"""``--check-config``: every option with its value and source, exit 0 or 2, no app import."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from server_process import ROOT, palfrey_command, run_to_completion

from palfrey.config.schema import options

EXPLODING_MODULE = """
from pathlib import Path

Path(__file__).with_name("imported.marker").write_text("imported")
raise RuntimeError("boom while importing the app")
"""


def check(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT):
    """``palfrey --check-config ARGS`` with no PALFREY_* variables but those in ``env``."""
    environ = {name: value for name, value in os.environ.items() if not name.startswith("PALFREY")}
    command = palfrey_command("--check-config", *args)
    return run_to_completion(command, cwd=cwd, env={**environ, **(env or {})})


def settings(stdout: str) -> dict[str, tuple[str, str]]:
    """``name = value  # source`` lines as {name: (value, source)}."""
    shown = {}
    for line in stdout.splitlines()[:-1]:
        assignment, _, source = line.partition("  # ")
        name, _, value = assignment.partition(" = ")
        assert name not in shown, line
        shown[name] = (value, source)
    return shown


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "palfrey.toml"
    path.write_text(
        'app = "palfrey.demo:app"\n'
        "port = 7000\n"
        "timeout_keep_alive = 3\n"
        'header = ["x-from:file"]\n'
        "\n[socket]\n"
        "backlog = 100\n"
        'uds_mode = "660"\n'
        "\n[websocket]\n"
        "ws_per_message_deflate = false\n",
        encoding="utf-8",
    )
    return path


def test_every_option_with_its_source(config_file: Path) -> None:
    result = check(
        *("--config", str(config_file), "--port", "9000", "--bind", "unix:/tmp/a.sock"),
        *("--bind", "[::1]:9001", "--no-access-log", "--root-path", 'say "hi"'),
        env={"PALFREY_HOST": "0.0.0.0", "PALFREY_PORT": "8500", "PALFREY_WORKERS": "3"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines()[-1] == "configuration is valid"
    shown = settings(result.stdout)
    # Every option a user can set, in schema order, and nothing else.
    assert list(shown) == [field.name for field, option in options() if option.cli]
    config = str(config_file)
    assert shown["app"] == ('"palfrey.demo:app"', f"{config}: app")
    assert shown["port"] == ("9000", "--port")  # the flag beats the variable and the file
    assert shown["host"] == ('"0.0.0.0"', "environment variable PALFREY_HOST")
    assert shown["workers"] == ("3", "environment variable PALFREY_WORKERS")
    assert shown["timeout_keep_alive"] == ("3.0", f"{config}: timeout_keep_alive")
    assert shown["backlog"] == ("100", f"{config}: socket.backlog")
    assert shown["uds_mode"] == ('"660"', f"{config}: socket.uds_mode")
    assert shown["ws_per_message_deflate"] == (
        "false",
        f"{config}: websocket.ws_per_message_deflate",
    )
    assert shown["header"] == ('["x-from:file"]', f"{config}: header")
    assert shown["bind"] == ('["unix:/tmp/a.sock", "[::1]:9001"]', "--bind")
    # A negated switch is shown under its flag (either spelling names what to edit).
    assert shown["access_log"][0] == "false"
    assert shown["access_log"][1] in ("--no-access-log", "--access-log")
    assert shown["root_path"] == (r'"say \"hi\""', "--root-path")
    assert shown["check_config"] == ("true", "--check-config")
    assert shown["check_app"] == ("false", "default")
    assert shown["uds"] == ("(unset)", "default")
    assert shown["timeout_graceful_shutdown"] == ("30.0", "default")
    assert shown["reload_exclude"] == ("[]", "default")
    assert shown["log_level"] == ('"info"', "default")
    # set_options and other Python-only fields are not options a user can set.
    assert "set_options" not in shown


def test_env_var_beats_the_file(config_file: Path) -> None:
    result = check(env={"PALFREY_CONFIG": str(config_file), "PALFREY_PORT": "8500"})
    assert result.returncode == 0, result.stderr
    shown = settings(result.stdout)
    assert shown["port"] == ("8500", "environment variable PALFREY_PORT")
    assert shown["app"] == ('"palfrey.demo:app"', f"{config_file}: app")


def test_nothing_is_bound_or_served(tmp_path: Path) -> None:
    uds = tmp_path / "never.sock"
    result = check("palfrey.demo:app", "--uds", str(uds), "--port", "1")
    assert result.returncode == 0, result.stderr
    assert not uds.exists()
    assert "Palfrey running on" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "env", "toml", "message"),
    [
        (
            ["--port", "70000"],
            {},
            "",
            "--port: must be an integer from 0 to 65535, got 70000",
        ),
        (
            [],
            {"PALFREY_PORT": "abc"},
            "",
            "environment variable PALFREY_PORT: expected an integer, got 'abc'",
        ),
        (
            [],
            {},
            "port = 70000\n",
            "{config}: port: must be an integer from 0 to 65535, got 70000",
        ),
        (
            [],
            {},
            '[socket]\nuds_mode = "9"\n',
            "{config}: socket.uds_mode: must be octal file permissions such as 660, got '9'",
        ),
        (
            [],
            {"PALFREY_BIND": "127.0.0.1:0\nnope"},
            "",
            "environment variable PALFREY_BIND: entry 'nope': expected HOST:PORT",
        ),
        (
            ["--bind", "unix:"],
            {},
            "",
            "--bind: entry 'unix:': expected a path after 'unix:'",
        ),
        (
            ["--reload", "--workers", "2"],
            {},
            "",
            "reload and workers > 1 cannot be combined",
        ),
        (
            [],
            {},
            "prot = 8000\n",
            "{config}: unknown key 'prot' (did you mean 'port'?)",
        ),
    ],
)
def test_bad_value_exits_2_naming_its_source(
    tmp_path: Path, args: list[str], env: dict[str, str], toml: str, message: str
) -> None:
    config = tmp_path / "palfrey.toml"
    config.write_text(toml, encoding="utf-8")
    result = check("palfrey.demo:app", "--config", str(config), *args, env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("palfrey: error: " + message.format(config=config))
    assert len(result.stderr.splitlines()) == 1


def test_app_is_not_imported_without_check_app(tmp_path: Path) -> None:
    (tmp_path / "exploding.py").write_text(EXPLODING_MODULE)
    result = check("exploding:app", "--app-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "configuration is valid"
    assert settings(result.stdout)["app_dir"] == (f'"{tmp_path}"', "--app-dir")
    assert not (tmp_path / "imported.marker").exists()


def test_missing_app_module_is_fine_without_check_app(tmp_path: Path) -> None:
    result = check("no_such_module_here:app", "--app-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr


def test_check_app_imports_the_app() -> None:
    result = check("palfrey.demo:app", "--check-app")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "configuration is valid and the application loads"
    assert settings(result.stdout)["check_app"] == ("true", "--check-app")


@pytest.mark.parametrize(
    ("app", "message"),
    [
        ("no_such_module_here:app", "module 'no_such_module_here' not found"),
        ("palfrey.demo:nope", "has no attribute 'nope'"),
    ],
)
def test_check_app_with_a_bad_import_string_exits_2(app: str, message: str) -> None:
    result = check(app, "--check-app")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("palfrey: error: ")
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_check_app_with_an_app_that_fails_to_import_exits_2(tmp_path: Path) -> None:
    (tmp_path / "exploding.py").write_text(EXPLODING_MODULE)
    result = check("exploding:app", "--app-dir", str(tmp_path), "--check-app")
    assert (tmp_path / "imported.marker").exists()
    assert "boom while importing the app" in result.stderr
    assert "configuration is valid" not in result.stdout
    assert result.returncode == 2, result.stderr


@pytest.mark.parametrize("flag", ["--ssl-certfile", "--ssl-keyfile", "--ssl-ca-certs"])
def test_missing_tls_file_is_reported(tmp_path: Path, flag: str) -> None:
    """A TLS file that isn't there is a configuration error, like --log-config's,
    not a failure at startup once the application is imported."""
    present = tmp_path / "present.pem"
    present.write_text("")
    missing = tmp_path / "missing.pem"
    args = [flag, str(missing)]
    if flag != "--ssl-certfile":
        args += ["--ssl-certfile", str(present)]
    result = check("palfrey.demo:app", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"palfrey: error: {flag}: file {str(missing)!r} does not exist\n"
