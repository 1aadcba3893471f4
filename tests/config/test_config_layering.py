"""The configuration layer stays cheap to import and never pulls in the server.

Each check runs in a fresh interpreter: in the test process the server is
already imported, so ``sys.modules`` there proves nothing.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import palfrey
from palfrey.config.cli import version

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Modules the configuration layer must not load: the I/O libraries and every layer below it
#: except the sans-I/O protocols' pure helpers.
HEAVY_PREFIXES = (
    "trio",
    "h11",
    "h2",
    "wsproto",
    "palfrey.server",
    "palfrey.transport",
    "palfrey.asgi",
)


def loaded_after(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; return the heavy modules it left in ``sys.modules``."""
    script = textwrap.dedent(code) + textwrap.dedent(
        f"""
        import json, sys
        prefixes = {HEAVY_PREFIXES!r}
        print(json.dumps(sorted(
            name for name in sys.modules
            if any(name == p or name.startswith(p + ".") for p in prefixes)
        )))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=True,
        timeout=60,
    )
    return json.loads(result.stdout.splitlines()[-1])


def test_import_config_loads_no_server_or_io_library() -> None:
    assert loaded_after("import palfrey.config") == []


def test_building_a_config_loads_no_server() -> None:
    code = """
        from palfrey.config import Config, load_config
        Config(app="m:app", header=["x-a: 1"])
        load_config(["m:app", "--port", "9000"])
    """
    assert loaded_after(code) == []


def test_version_and_help_load_no_server() -> None:
    code = """
        import contextlib, io
        from palfrey.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["--version"]) == 0
            assert main(["--help"]) == 0
    """
    assert loaded_after(code) == []


def test_header_grammar_loads_nothing_else_of_palfrey() -> None:
    code = """
        import sys
        import palfrey.protocols.fields
        others = {
            name for name in sys.modules
            if name.startswith("palfrey.")
            and name not in ("palfrey._version", "palfrey.protocols", "palfrey.protocols.fields")
        }
        assert not others, others
    """
    assert loaded_after(code) == []


def test_public_api_resolves_lazily_in_a_fresh_interpreter() -> None:
    code = """
        import sys
        import palfrey
        assert "palfrey.server.server" not in sys.modules
        from palfrey import Config, run, serve
        from palfrey.config.schema import Config as SchemaConfig
        from palfrey.cli import run as runner_run
        from palfrey.server.server import serve as server_serve
        assert (Config, run, serve) == (SchemaConfig, runner_run, server_serve)
    """
    assert "palfrey.server.server" in loaded_after(code)


def test_public_api_names() -> None:
    from palfrey.cli import run  # noqa: PLC0415
    from palfrey.config.schema import Config  # noqa: PLC0415
    from palfrey.server.server import serve  # noqa: PLC0415

    assert palfrey.Config is Config
    assert palfrey.run is run
    assert palfrey.serve is serve
    assert set(palfrey.__all__) == {"Config", "__version__", "run", "serve"}
    assert set(palfrey.__all__) <= set(dir(palfrey))


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        _ = palfrey.nonexistent  # type: ignore[attr-defined]


def test_cli_version_is_the_package_version() -> None:
    assert version() == palfrey.__version__


def test_installed_metadata_matches_the_source_version() -> None:
    # The package metadata takes its version from palfrey/_version.py (pyproject.toml, dynamic).
    try:
        installed = importlib.metadata.version("palfrey")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("palfrey is not installed")
    assert installed == palfrey.__version__
