from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from palfrey.config import Config, ConfigError
from palfrey.config.importer import import_from_string, load_app


@pytest.fixture(autouse=True)
def isolated_interpreter(monkeypatch):
    """Undo what importing test modules and loading env files do to the process."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(os, "environ", dict(os.environ))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


@pytest.fixture
def make_module(tmp_path: Path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(dotted: str, source: str = "") -> Path:
        parts = dotted.split(".")
        directory = tmp_path
        for package in parts[:-1]:
            directory = directory / package
            directory.mkdir(exist_ok=True)
            (directory / "__init__.py").touch()
        path = directory / f"{parts[-1]}.py"
        path.write_text(textwrap.dedent(source), encoding="utf-8")
        return path

    return make


class TestImportFromString:
    @pytest.mark.parametrize("text", ["nocolon", ":app", "mod:", "mod:a..b", "mod:.a", ""])
    def test_bad_format(self, text):
        with pytest.raises(ConfigError) as info:
            import_from_string(text)
        assert str(info.value) == f"application {text!r} must be 'module:attribute'"

    def test_imports_attribute(self, make_module):
        make_module("palfrey_t_plain", "app = object()\n")
        app = import_from_string("palfrey_t_plain:app")
        assert app is sys.modules["palfrey_t_plain"].app

    def test_nested_attribute(self, make_module):
        make_module("palfrey_t_nested", "class Holder:\n    class inner:\n        app = 42\n")
        assert import_from_string("palfrey_t_nested:Holder.inner.app") == 42

    def test_submodule(self, make_module):
        make_module("palfrey_t_pkg.sub", "app = 'sub'\n")
        assert import_from_string("palfrey_t_pkg.sub:app") == "sub"

    def test_module_not_found(self):
        with pytest.raises(ConfigError) as info:
            import_from_string("palfrey_t_missing:app")
        assert str(info.value) == (
            "cannot import application 'palfrey_t_missing:app':"
            " module 'palfrey_t_missing' not found"
        )

    def test_parent_package_not_found(self):
        with pytest.raises(ConfigError, match=r"module 'palfrey_t_nopkg' not found$"):
            import_from_string("palfrey_t_nopkg.sub:app")

    def test_submodule_not_found(self, make_module):
        make_module("palfrey_t_pkg2.present", "")
        with pytest.raises(ConfigError, match=r"module 'palfrey_t_pkg2\.absent' not found$"):
            import_from_string("palfrey_t_pkg2.absent:app")

    def test_missing_dependency_inside_module_propagates(self, make_module):
        make_module("palfrey_t_broken_dep", "import palfrey_t_not_installed\napp = 1\n")
        with pytest.raises(ModuleNotFoundError) as info:
            import_from_string("palfrey_t_broken_dep:app")
        assert not isinstance(info.value, ConfigError)
        assert info.value.name == "palfrey_t_not_installed"

    def test_import_error_inside_module_propagates(self, make_module):
        make_module("palfrey_t_bad_name", "from os import not_a_thing\n")
        with pytest.raises(ImportError, match="not_a_thing"):
            import_from_string("palfrey_t_bad_name:app")

    def test_other_errors_inside_module_propagate(self, make_module):
        make_module("palfrey_t_raises", "raise RuntimeError('boom')\n")
        with pytest.raises(RuntimeError, match="boom"):
            import_from_string("palfrey_t_raises:app")

    def test_attribute_not_found(self, make_module):
        make_module("palfrey_t_noattr", "other = 1\n")
        with pytest.raises(ConfigError) as info:
            import_from_string("palfrey_t_noattr:app")
        assert str(info.value) == (
            "cannot import application 'palfrey_t_noattr:app':"
            " 'palfrey_t_noattr' has no attribute 'app'"
        )

    def test_nested_attribute_not_found(self, make_module):
        make_module("palfrey_t_nested_missing", "class Holder:\n    pass\n")
        with pytest.raises(ConfigError) as info:
            import_from_string("palfrey_t_nested_missing:Holder.app.x")
        assert str(info.value).endswith("'palfrey_t_nested_missing:Holder' has no attribute 'app'")


class TestLoadApp:
    def test_app_dir_goes_first_on_sys_path(self, tmp_path):
        (tmp_path / "palfrey_t_appdir.py").write_text("app = 'from app_dir'\n")
        config = Config(app="palfrey_t_appdir:app", app_dir=str(tmp_path))
        assert load_app(config) == "from app_dir"
        assert sys.path[0] == str(tmp_path)

    def test_env_file_is_loaded_before_import(self, tmp_path):
        (tmp_path / "palfrey_t_reads_env.py").write_text(
            "import os\napp = (os.environ['PALFREY_T_A'], os.environ['PALFREY_T_B'])\n"
        )
        env_file = tmp_path / ".env"
        env_file.write_text("PALFREY_T_A=from-file\nPALFREY_T_B=from-file\n")
        os.environ["PALFREY_T_B"] = "already-set"
        config = Config(
            app="palfrey_t_reads_env:app", app_dir=str(tmp_path), env_file=str(env_file)
        )
        assert load_app(config) == ("from-file", "already-set")

    def test_missing_env_file(self, tmp_path):
        missing = str(tmp_path / "missing.env")
        with pytest.raises(ValueError) as info:
            Config(app="x:y", env_file=missing)
        assert str(info.value) == f"env_file {missing!r} not found"

    def test_env_file_gone_by_import_time(self, tmp_path):
        env = tmp_path / "app.env"
        env.write_text("A=1\n")
        config = Config(app="x:y", env_file=str(env))
        env.unlink()
        with pytest.raises(ConfigError, match=r"env file .* not found"):
            load_app(config)

    def test_factory_is_called(self, make_module):
        make_module("palfrey_t_factory", "def create():\n    return 'built'\n")
        assert load_app(Config(app="palfrey_t_factory:create", factory=True)) == "built"

    def test_factory_needing_arguments(self, make_module):
        make_module("palfrey_t_factory_args", "def create(settings):\n    return settings\n")
        with pytest.raises(ConfigError) as info:
            load_app(Config(app="palfrey_t_factory_args:create", factory=True))
        assert str(info.value).startswith(
            "application factory 'palfrey_t_factory_args:create' cannot be called without"
            " arguments: "
        )

    def test_type_error_inside_factory_propagates(self, make_module):
        make_module("palfrey_t_factory_bug", "def create():\n    return 1 + 'a'\n")
        with pytest.raises(TypeError):
            load_app(Config(app="palfrey_t_factory_bug:create", factory=True))

    def test_factory_not_callable(self, make_module):
        make_module("palfrey_t_not_callable", "app = 3\n")
        with pytest.raises(ConfigError, match=r"'palfrey_t_not_callable:app' is not callable"):
            load_app(Config(app="palfrey_t_not_callable:app", factory=True))

    def test_app_object_is_returned_as_is(self):
        def app(scope, receive, send): ...

        assert load_app(Config(app=app)) is app

    def test_app_object_factory(self):
        sentinel = object()
        assert load_app(Config(app=lambda: sentinel, factory=True)) is sentinel

    def test_without_app(self):
        with pytest.raises(ConfigError, match="no application given"):
            load_app(Config())
