"""The documentation site: every page is in the navigation, and the site builds strictly.

* ``nav`` in ``mkdocs.yml`` names every ``.md`` file under ``docs/`` exactly
  once, and names no file that does not exist, so a page can be neither
  orphaned (reachable only by search) nor listed twice.
* ``mkdocs build --strict`` succeeds: no broken link, missing page or bad
  anchor. MkDocs is in the ``dev`` extra, so the suite always builds the site.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
MKDOCS_YML = ROOT / "mkdocs.yml"


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads MkDocs' own tags as None instead of refusing the
    file: ``!!python/...`` (the mermaid fence's formatter, the slug function) and
    ``!relative`` (the snippets' base path)."""


def _ignore_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> None:
    return None


_ConfigLoader.add_multi_constructor("tag:yaml.org,2002:python/", _ignore_tag)
_ConfigLoader.add_multi_constructor("!relative", _ignore_tag)


def mkdocs_config() -> dict[str, Any]:
    return yaml.load(MKDOCS_YML.read_text(), Loader=_ConfigLoader)  # a SafeLoader subclass


def nav_files(entries: list[Any]) -> list[str]:
    """Every file the navigation names, in order, with repeats."""
    files: list[str] = []
    for entry in entries:
        if isinstance(entry, str):
            files.append(entry)
        elif isinstance(entry, dict):
            for value in entry.values():
                if isinstance(value, str):
                    files.append(value)
                else:
                    files.extend(nav_files(value))
    return [name for name in files if "://" not in name]


def docs_dir() -> Path:
    return ROOT / mkdocs_config().get("docs_dir", "docs")


def test_config_reads_and_builds_strictly_by_default() -> None:
    config = mkdocs_config()
    assert config["docs_dir"] == "docs"
    assert config["site_dir"] == "site"
    assert config["strict"] is True


def test_nav_lists_every_page_once() -> None:
    listed = nav_files(mkdocs_config()["nav"])
    assert listed, "mkdocs.yml has no nav"
    twice = sorted(name for name, count in Counter(listed).items() if count > 1)
    assert not twice, f"listed more than once in mkdocs.yml's nav: {twice}"
    pages = {path.relative_to(docs_dir()).as_posix() for path in docs_dir().rglob("*.md")}
    orphaned = sorted(pages - set(listed))
    assert not orphaned, f"pages missing from mkdocs.yml's nav: {orphaned}"


def test_every_nav_entry_exists() -> None:
    missing = [
        name for name in nav_files(mkdocs_config()["nav"]) if not (docs_dir() / name).is_file()
    ]
    assert not missing, f"mkdocs.yml's nav names pages that do not exist: {missing}"


def test_site_builds_strictly(tmp_path: Path) -> None:
    # Not -q: it silences the warnings that --strict counts, and the build then passes.
    site = tmp_path / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(MKDOCS_YML),
            "-d",
            str(site),
        ],
        check=False,
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}{result.stderr}"
    assert (site / "index.html").is_file()
    assert (site / "concepts" / "index.html").is_file()
