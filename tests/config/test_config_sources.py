from __future__ import annotations

from pathlib import Path

import pytest

from palfrey.config import Config, ConfigError, load_config
from palfrey.config.schema import options
from palfrey.config.sources import (
    TEXT_CONVERTERS,
    TOML_CONVERTERS,
    env_var_name,
    read_config_file,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def write_toml(tmp_path: Path):
    def write(text: str, name: str = "palfrey.toml") -> str:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    return write


def load(*argv: str, env: dict[str, str] | None = None) -> Config:
    return load_config(list(argv), env or {})


def error_of(*argv: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(*argv, env=env)
    return str(info.value)


# One row per option kind: TOML literal, env text, CLI args, and the value each produces.
PRECEDENCE_CASES = [
    pytest.param("port", "1111", "2222", ["--port", "3333"], 1111, 2222, 3333, id="int"),
    pytest.param(
        "timeout_keep_alive",
        "1.5",
        "2.5",
        ["--timeout-keep-alive", "3.5"],
        1.5,
        2.5,
        3.5,
        id="float",
    ),
    pytest.param("access_log", "false", "yes", ["--no-access-log"], False, True, False, id="bool"),
    pytest.param(
        "log_level",
        '"debug"',
        "warning",
        ["--log-level", "error"],
        "debug",
        "warning",
        "error",
        id="choice",
    ),
    pytest.param(
        "root_path", '"/file"', "/env", ["--root-path", "/cli"], "/file", "/env", "/cli", id="str"
    ),
    pytest.param(
        "header",
        '["a:file"]',
        "a:env",
        ["--header", "a:cli"],
        ["a:file"],
        ["a:env"],
        ["a:cli"],
        id="list",
    ),
]


@pytest.mark.parametrize(
    ("name", "toml", "env_text", "cli", "file_value", "env_value", "cli_value"), PRECEDENCE_CASES
)
class TestPrecedence:
    def test_default_when_no_source_sets_it(
        self, write_toml, name, toml, env_text, cli, file_value, env_value, cli_value
    ):
        path = write_toml('app = "m:a"\n')
        assert getattr(load("--config", path), name) == getattr(Config(), name)

    def test_file_beats_default(
        self, write_toml, name, toml, env_text, cli, file_value, env_value, cli_value
    ):
        path = write_toml(f'app = "m:a"\n{name} = {toml}\n')
        assert getattr(load("--config", path), name) == file_value

    def test_env_beats_default(self, name, toml, env_text, cli, file_value, env_value, cli_value):
        assert getattr(load("m:a", env={env_var_name(name): env_text}), name) == env_value

    def test_cli_beats_default(self, name, toml, env_text, cli, file_value, env_value, cli_value):
        assert getattr(load("m:a", *cli), name) == cli_value

    def test_env_beats_file(
        self, write_toml, name, toml, env_text, cli, file_value, env_value, cli_value
    ):
        path = write_toml(f'app = "m:a"\n{name} = {toml}\n')
        config = load("--config", path, env={env_var_name(name): env_text})
        assert getattr(config, name) == env_value

    def test_cli_beats_file(
        self, write_toml, name, toml, env_text, cli, file_value, env_value, cli_value
    ):
        path = write_toml(f'app = "m:a"\n{name} = {toml}\n')
        assert getattr(load("--config", path, *cli), name) == cli_value

    def test_cli_beats_env(self, name, toml, env_text, cli, file_value, env_value, cli_value):
        config = load("m:a", *cli, env={env_var_name(name): env_text})
        assert getattr(config, name) == cli_value

    def test_cli_beats_env_and_file(
        self, write_toml, name, toml, env_text, cli, file_value, env_value, cli_value
    ):
        path = write_toml(f'app = "m:a"\n{name} = {toml}\n')
        config = load("--config", path, *cli, env={env_var_name(name): env_text})
        assert getattr(config, name) == cli_value


def test_unset_options_keep_schema_defaults():
    config = load("m:a")
    for field, _option in options():
        if field.name not in ("app", "set_options"):
            assert getattr(config, field.name) == getattr(Config(), field.name)
    assert config.set_options == {"app"}


class TestApp:
    def test_app_from_file(self, write_toml):
        assert load("--config", write_toml('app = "pkg.main:app"\n')).app == "pkg.main:app"

    def test_cli_app_beats_file(self, write_toml):
        assert load("--config", write_toml('app = "file:app"\n'), "cli:app").app == "cli:app"

    def test_app_from_env(self):
        assert load(env={"PALFREY_APP": "env:app"}).app == "env:app"

    def test_missing_app(self):
        assert error_of() == (
            "no application given: pass APP as 'module:attribute' or set 'app' in the config file"
        )


class TestConfigFileSelection:
    def test_no_file_is_read_by_default(self, tmp_path, monkeypatch):
        (tmp_path / "palfrey.toml").write_text("port = 1\n")
        monkeypatch.chdir(tmp_path)
        assert load("m:a").port == 8000

    def test_env_selects_file(self, write_toml):
        assert load(env={"PALFREY_CONFIG": write_toml('app = "m:a"\nport = 1\n')}).port == 1

    def test_flag_beats_env(self, write_toml):
        from_env = write_toml('app = "m:a"\nport = 1\n', "env.toml")
        from_flag = write_toml('app = "m:a"\nport = 2\n', "flag.toml")
        assert load("--config", from_flag, env={"PALFREY_CONFIG": from_env}).port == 2

    def test_missing_file(self, tmp_path):
        path = str(tmp_path / "nope.toml")
        assert error_of("--config", path) == f"config file {path!r} not found"

    def test_directory(self, tmp_path):
        assert "could not be read" in error_of("--config", str(tmp_path))

    def test_invalid_toml(self, write_toml):
        path = write_toml("port = \n")
        message = error_of("--config", path)
        assert message.startswith(f"{path}: invalid TOML: ")
        assert "\n" not in message

    def test_invalid_utf8(self, tmp_path):
        path = tmp_path / "bad.toml"
        path.write_bytes(b'host = "\xff"\n')
        assert error_of("--config", str(path)).startswith(f"{path}: invalid TOML: ")


class TestFileKeys:
    def test_unknown_key_suggests(self, write_toml):
        path = write_toml('app = "m:a"\nprot = 80\n')
        assert error_of("--config", path) == f"{path}: unknown key 'prot' (did you mean 'port'?)"

    def test_unknown_key_without_suggestion(self, write_toml):
        path = write_toml("zzzzzz = 1\n")
        assert error_of("--config", path) == f"{path}: unknown key 'zzzzzz'"

    def test_grouped_tables(self, write_toml):
        path = write_toml(
            "[timeouts]\ntimeout_keep_alive = 3\n"
            f'[tls]\nssl_certfile = "{__file__}"\n[protocol]\nheader = ["a:b"]\n'
            '[application]\napp = "m:a"\nfactory = true\n'
        )
        config = load("--config", path)
        assert config.timeout_keep_alive == 3.0
        assert isinstance(config.timeout_keep_alive, float)
        assert config.ssl_certfile == __file__
        assert config.header == ["a:b"]
        assert config.factory is True
        assert config.app == "m:a"

    def test_flat_and_grouped_forms_agree(self, write_toml):
        flat = load("--config", write_toml('app = "m:a"\nhttp = "h11"\n', "flat.toml"))
        table = load(
            "--config", write_toml('[application]\napp = "m:a"\n[protocol]\nhttp = "h11"\n')
        )
        assert (flat.app, flat.http) == (table.app, table.http) == ("m:a", "h11")

    def test_unknown_table(self, write_toml):
        path = write_toml("[timeout]\ntimeout_keep_alive = 3\n")
        assert error_of("--config", path) == (
            f"{path}: unknown table [timeout] (did you mean 'timeouts'?)"
        )

    def test_key_in_wrong_table(self, write_toml):
        path = write_toml("[application]\nfactory = true\nport = 80\n")
        assert error_of("--config", path) == (
            f"{path}: 'port' does not belong in [application];"
            " put it in [socket] or at the top level"
        )

    def test_unknown_key_in_table(self, write_toml):
        path = write_toml("[timeouts]\ntimeout_keep_alvie = 3\n")
        assert error_of("--config", path) == (
            f"{path}: unknown key 'timeout_keep_alvie' in [timeouts]"
            " (did you mean 'timeout_keep_alive'?)"
        )

    def test_key_set_twice(self, write_toml):
        path = write_toml("port = 1\n[socket]\nport = 2\n")
        assert error_of("--config", path) == (
            f"{path}: 'port' is set both at the top level and in [socket]"
        )

    def test_sources_are_tracked_per_key(self, write_toml):
        path = write_toml("port = 1\n[timeouts]\ntimeout_keep_alive = 2\n")
        settings = read_config_file(path)
        assert settings["port"].source == f"{path}: port"
        assert settings["timeout_keep_alive"].source == f"{path}: timeouts.timeout_keep_alive"


class TestFileTypes:
    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            ('port = "80"', "port: expected an integer, got '80'"),
            ("port = true", "port: expected an integer, got true"),
            ("port = 80.0", "port: expected an integer, got 80.0"),
            ('timeout_keep_alive = "5"', "timeout_keep_alive: expected a number, got '5'"),
            ("timeout_keep_alive = false", "timeout_keep_alive: expected a number, got false"),
            ('access_log = "no"', "access_log: expected true or false, got 'no'"),
            ("access_log = 0", "access_log: expected true or false, got 0"),
            ("host = 1", "host: expected a string, got 1"),
            ("header = [1]", "header: expected an array of strings, got an array"),
            ("header = 1", "header: expected an array of strings, got 1"),
            ("host = {a = 1}", "host: expected a string, got a table"),
            (
                'log_level = "loud"',
                "log_level: must be one of critical, error, warning, info,"
                " debug, trace, got 'loud'",
            ),
        ],
    )
    def test_wrong_type(self, write_toml, line, expected):
        path = write_toml(line + "\n")
        assert error_of("--config", path) == f"{path}: {expected}"

    def test_float_accepts_int(self, write_toml):
        config = load("--config", write_toml('app = "m:a"\ntimeout_keep_alive = 3\n'))
        assert config.timeout_keep_alive == 3.0
        assert isinstance(config.timeout_keep_alive, float)

    def test_list_accepts_single_string(self, write_toml):
        assert load("--config", write_toml('app = "m:a"\nheader = "a:b"\n')).header == ["a:b"]

    def test_optional_option_is_set_by_file(self, write_toml):
        path = write_toml('app = "m:a"\nlimit_request_body = 1024\n')
        assert load("--config", path).limit_request_body == 1024


class TestValidationNamesSource:
    def test_file(self, write_toml):
        path = write_toml('app = "m:a"\nport = 70000\n')
        assert error_of("--config", path) == (
            f"{path}: port: must be an integer from 0 to 65535, got 70000"
        )

    def test_file_table(self, write_toml):
        path = write_toml('app = "m:a"\n[timeouts]\ntimeout_keep_alive = -1\n')
        assert error_of("--config", path) == (
            f"{path}: timeouts.timeout_keep_alive: must be >= 0, got -1.0"
        )

    def test_env(self):
        assert error_of("m:a", env={"PALFREY_PORT": "70000"}) == (
            "environment variable PALFREY_PORT: must be an integer from 0 to 65535, got 70000"
        )

    def test_cli(self):
        assert error_of("m:a", "--port", "70000") == (
            "--port: must be an integer from 0 to 65535, got 70000"
        )

    def test_cli_value_wins_over_bad_file_value(self, write_toml):
        path = write_toml('app = "m:a"\nport = 70000\n')
        assert load("--config", path, "--port", "1").port == 1

    def test_list_entry(self):
        assert error_of("m:a", "--header", "a:b", "--header", "nocolon") == (
            "--header: entries must look like 'name:value', got 'nocolon'"
        )

    def test_choice_validator_message_is_one_sentence(self):
        assert error_of("m:a", "--ssl-cert-reqs", "3") == (
            "--ssl-cert-reqs: must be one of 0, 1, 2, got 3"
        )

    def test_access_log_format_names_the_option_once(self):
        """The validator's ``access_log_format: `` prefix is dropped like ``name ``."""
        assert error_of("m:a", "--access-log-format", "%(zz)s") == (
            "--access-log-format: unknown access log atom '%(zz)s'"
        )

    def test_env_file_names_the_option_once(self, tmp_path):
        missing = str(tmp_path / "missing.env")
        assert error_of("m:a", "--env-file", missing) == f"--env-file: {missing!r} not found"
        assert error_of("m:a", "--env-file", str(tmp_path)).startswith(
            f"--env-file: {str(tmp_path)!r} could not be read: "
        )

    def test_nan(self):
        assert error_of("m:a", env={"PALFREY_TIMEOUT_KEEP_ALIVE": "nan"}) == (
            "environment variable PALFREY_TIMEOUT_KEEP_ALIVE: must be a number, got NaN"
        )


class TestEnvironment:
    @pytest.mark.parametrize("text", ["1", "true", "TRUE", "Yes", "on", " ON "])
    def test_true_words(self, text):
        assert load("m:a", env={"PALFREY_FACTORY": text}).factory is True

    @pytest.mark.parametrize("text", ["0", "false", "False", "NO", "off"])
    def test_false_words(self, text):
        assert load("m:a", env={"PALFREY_ACCESS_LOG": text}).access_log is False

    def test_bad_bool(self):
        assert error_of("m:a", env={"PALFREY_ACCESS_LOG": "maybe"}) == (
            "environment variable PALFREY_ACCESS_LOG: expected a boolean"
            " (true/false, yes/no, on/off, 1/0), got 'maybe'"
        )

    def test_bad_int(self):
        assert error_of("m:a", env={"PALFREY_PORT": "abc"}) == (
            "environment variable PALFREY_PORT: expected an integer, got 'abc'"
        )

    def test_bad_float(self):
        assert error_of("m:a", env={"PALFREY_TIMEOUT_KEEP_ALIVE": "soon"}) == (
            "environment variable PALFREY_TIMEOUT_KEEP_ALIVE: expected a number, got 'soon'"
        )

    def test_bad_choice(self):
        assert error_of("m:a", env={"PALFREY_LIFESPAN": "maybe"}) == (
            "environment variable PALFREY_LIFESPAN: must be one of auto, on, off, got 'maybe'"
        )

    def test_list_splits_on_newlines_only(self):
        env = {"PALFREY_HEADER": "x-a: 1, 2; 3\n\n  x-b:4  \n"}
        assert load("m:a", env=env).header == ["x-a: 1, 2; 3", "x-b:4"]

    def test_empty_variable_is_ignored(self, write_toml):
        path = write_toml('app = "m:a"\nport = 1\n')
        assert load("--config", path, env={"PALFREY_PORT": ""}).port == 1

    def test_unrelated_prefixed_variables_are_ignored(self):
        assert load("m:a", env={"PALFREY_SOMETHING_ELSE": "x"}).port == 8000

    @pytest.mark.parametrize(
        ("argv", "env", "uvicorn_variable", "trusted"),
        [
            ([], {}, None, "127.0.0.1,::1"),
            ([], {}, "10.0.0.0/8", "10.0.0.0/8"),
            ([], {"PALFREY_FORWARDED_ALLOW_IPS": "10.0.0.1"}, "10.0.0.0/8", "10.0.0.1"),
            (["--forwarded-allow-ips", "*"], {}, "10.0.0.0/8", "*"),
        ],
    )
    def test_trusted_proxies_follow_uvicorn(
        self, monkeypatch, argv, env, uvicorn_variable, trusted
    ):
        # Uvicorn reads $FORWARDED_ALLOW_IPS when the option is not given.
        if uvicorn_variable is None:
            monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
        else:
            monkeypatch.setenv("FORWARDED_ALLOW_IPS", uvicorn_variable)
        assert load("m:a", *argv, env=env).trusted_proxies == trusted

    def test_environ_defaults_to_os_environ(self, monkeypatch):
        monkeypatch.setenv("PALFREY_PORT", "4321")
        assert load_config(["m:a"]).port == 4321


def test_every_kind_has_converters():
    for field, option in options():
        assert option.kind in TOML_CONVERTERS, field.name
        assert option.kind in TEXT_CONVERTERS, field.name


@pytest.mark.parametrize("name", ["palfrey.toml", "production.toml"])
def test_example_configs_load(name):
    config = load("--config", str(REPO_ROOT / "config" / name))
    assert config.app == "palfrey.demo:app"


def test_tls_example_sets_certificates():
    """Its paths are placeholders under /etc: all else loads, and the missing
    certificate is reported as such."""
    path = str(REPO_ROOT / "config" / "tls.toml")
    settings = read_config_file(path)
    assert settings["app"].value == "palfrey.demo:app"
    assert {"ssl_certfile", "ssl_keyfile"} <= settings.keys()
    assert error_of("--config", path) == (
        f"{path}: tls.ssl_certfile: file '/etc/palfrey/tls/cert.pem' does not exist"
    )


def test_keyfile_without_certfile_is_refused(tmp_path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("")
    assert error_of("m:a", "--ssl-keyfile", str(key)) == (
        "ssl_keyfile is set without ssl_certfile; TLS needs the certificate"
    )


@pytest.mark.parametrize("name", ["ssl_certfile", "ssl_keyfile", "ssl_ca_certs"])
def test_missing_tls_file_is_a_configuration_error(name, tmp_path, write_toml) -> None:
    """Caught when the configuration is built (so by --check-config), naming option and path,
    not when the server starts after importing the application."""
    missing = str(tmp_path / "missing.pem")
    flag = "--" + name.replace("_", "-")
    assert error_of("m:a", flag, missing) == f"{flag}: file {missing!r} does not exist"
    variable = env_var_name(name)
    assert error_of("m:a", env={variable: missing}) == (
        f"environment variable {variable}: file {missing!r} does not exist"
    )
    path = write_toml(f'app = "m:a"\n{name} = "{missing}"\n')
    assert error_of("--config", path) == f"{path}: {name}: file {missing!r} does not exist"
    with pytest.raises(ValueError, match=rf"^{name} file .* does not exist$"):
        Config(app="m:a", **{name: missing})


def test_existing_tls_files_are_accepted(tmp_path) -> None:
    files = {name: tmp_path / f"{name}.pem" for name in ("cert", "key", "ca")}
    for file in files.values():
        file.write_text("")
    config = load(
        "m:a",
        *("--ssl-certfile", str(files["cert"]), "--ssl-keyfile", str(files["key"])),
        *("--ssl-ca-certs", str(files["ca"])),
    )
    assert config.ssl_ca_certs == str(files["ca"])


def test_config_choice_error_is_a_sentence() -> None:
    """``Config()`` itself says what is wrong in one line (attrs' ``in_`` gave a tuple)."""
    with pytest.raises(ValueError) as info:
        Config(app="m:a", loop="uvloop")
    assert str(info.value) == "loop must be one of trio, asyncio, got 'uvloop'"


def test_header_option_needs_a_token_name() -> None:
    assert error_of("m:a", "--header", "x(y: 1") == (
        "--header: entry 'x(y: 1' is not a valid header"
    )
