"""The documentation stays true to the code.

* The configuration reference is generated from the schema; that it is current
  and complete is checked in ``tests/test_config_reference.py``.
* Every ``--flag`` and ``PALFREY_*`` variable the docs mention exists, and every
  TOML example in the docs is accepted by the real config-file reader. The
  migration guides may also name the other server's flags, in the first
  column of their tables.
* The README opens with the serve and test commands, and the test command is
  exactly what ``.ci/run`` runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from palfrey.config.cli import build_parser
from palfrey.config.schema import options
from palfrey.config.sources import env_var_name, load_config, read_config_file

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"

SERVE_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -e . && "
    ".venv/bin/palfrey --config config/palfrey.toml"
)

#: Flags of other tools (pip, pytest, curl) that the docs may quote.
FOREIGN_FLAGS = {"--no-cache-dir", "--upgrade", "--http2", "--http2-prior-knowledge"}
#: Environment variables that are not options: the config file's, and the test suite's.
TEST_VARIABLES = {"PALFREY_CONFIG", "PALFREY_H2SPEC", "PALFREY_WSTEST", "PALFREY_FUZZ_EXAMPLES"}
#: Misspelt flags the configuration page shows being rejected.
EXAMPLE_TYPOS = {"--prot", "--time"}


def code_blocks(text: str) -> list[tuple[str, str]]:
    """Every fenced block as (info string, content)."""
    return [
        (match["info"].strip(), match["body"])
        for match in re.finditer(r"^```(?P<info>[^\n]*)\n(?P<body>.*?)^```", text, re.M | re.S)
    ]


def doc_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


OPTIONS = options()


FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9]*(?:-[a-z0-9]+)*)")


def other_server_flags(path: Path) -> set[str]:
    """The flags a migration guide lists as the other server's: its tables' first column."""
    if not path.name.startswith("migrate-from-"):
        return set()
    first_cells = re.findall(r"^\|([^|\n]*)\|", path.read_text(), re.M)
    return {flag for cell in first_cells for flag in FLAG.findall(cell)}


@pytest.mark.parametrize("path", doc_files(), ids=lambda path: path.name)
def test_flags_and_variables_in_the_docs_exist(path: Path) -> None:
    text = path.read_text()
    flags = {s for action in build_parser()._actions for s in action.option_strings}
    variables = {env_var_name(field.name) for field, _ in OPTIONS} | TEST_VARIABLES
    mentioned_flags = set(FLAG.findall(text))
    unknown_flags = (
        mentioned_flags - flags - FOREIGN_FLAGS - EXAMPLE_TYPOS - other_server_flags(path)
    )
    mentioned_variables = set(re.findall(r"\bPALFREY_[A-Z0-9_]*[A-Z0-9]\b", text))
    # ``PALFREY_<NAME>`` style placeholders are not variables.
    unknown_variables = mentioned_variables - variables
    assert not unknown_flags, f"{path.name} mentions flags palfrey lacks: {unknown_flags}"
    assert not unknown_variables, f"{path.name} mentions unknown variables: {unknown_variables}"


@pytest.mark.parametrize("path", doc_files(), ids=lambda path: path.name)
def test_toml_examples_are_valid_config(path: Path, tmp_path: Path) -> None:
    for number, (info, body) in enumerate(code_blocks(path.read_text())):
        if info != "toml":
            continue
        example = tmp_path / f"example{number}.toml"
        example.write_text(body)
        read_config_file(str(example))


def test_bundled_config_files_load() -> None:
    for path in sorted((ROOT / "config").glob("*.toml")):
        assert read_config_file(str(path))["app"].value == "palfrey.demo:app"


def readme_commands() -> tuple[str, str]:
    text = README.read_text()
    blocks = code_blocks(text)
    assert len(blocks) >= 2
    (serve_info, serve), (test_info, test) = blocks[:2]
    assert serve_info in ("sh", "shell", "bash")
    assert test_info in ("sh", "shell", "bash")
    before = text[: text.index("```")]
    assert before.startswith("# Palfrey")
    assert before.count("\n#") == 0, "the commands must come before any other section"
    return serve.strip(), test.strip()


def ci_command() -> str:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    commands = [line.strip() for line in lines if line.strip().startswith("python3 -m venv")]
    assert len(commands) == 1, ".ci/run should run one install-and-test command"
    return commands[0]


def test_readme_starts_with_serve_and_test_commands() -> None:
    serve, test = readme_commands()
    assert serve == SERVE_COMMAND
    assert test == ci_command()
    assert test.startswith("python3 -m venv .venv && .venv/bin/pip install ")
    assert "-e '.[dev]'" in test
    assert test.split(" && ")[-1].split()[0] == ".venv/bin/pytest"


def test_readme_serve_command_names_a_working_config() -> None:
    serve, _ = readme_commands()
    config_path = serve.rsplit("--config ", 1)[1]
    config = load_config(["--config", str(ROOT / config_path)], environ={})
    assert config.app == "palfrey.demo:app"


def heading_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = path.read_text()
    found = set()
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (match := re.match(r"#{1,6} (.*)", line)):
            found.add(heading_anchor(match.group(1)))
    return found


@pytest.mark.parametrize("path", doc_files(), ids=lambda path: path.name)
def test_relative_links_resolve(path: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        file_part, _, fragment = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        missing_anchor = bool(fragment) and linked.suffix == ".md"
        if not linked.exists() or (missing_anchor and fragment not in anchors(linked)):
            broken.append(target)
    assert not broken, f"{path.name} has broken links: {broken}"
