"""Every code sample in the documentation runs, so a page cannot drift from the code.

``tests/test_docs.py`` checks TOML examples and flag names; this file runs the
rest. Each ```` ```python ```` block of ``docs/*.md`` and ``README.md`` is
classified by what it is and run accordingly:

* a single ``def``/``async def`` line with no body is a *signature*: it must
  name a public ``palfrey`` callable and list the real parameters;
* a block that calls ``palfrey.run(...)`` is a *run program*: it runs in a
  subprocess against a module created where its import string points, the
  options it passes are validated by the real ``Config``, the port is replaced
  by 0 so tests never collide, and it must answer a request and exit 0 on
  Ctrl+C;
* a block that calls ``trio.run(...)`` at the top level is a *program*: it runs
  in a subprocess; if it prints a URL while still running, that URL must
  answer, then the program is interrupted;
* a block defining ``async def test_*`` is a *test*: each one runs under
  ``trio`` with a deadline;
* a block defining ``app`` is an *application*: it is served by
  ``palfrey.serve`` on a free port with its lifespan, and must answer
  ``GET /`` without an exception being logged.

A block that uses ``app`` without defining it gets the definitions of the
nearest earlier block on the same page that defines one (else the quickstart's
application), as a reader would. A block that is deliberately a fragment says
so with ``<!-- sample: fragment -->`` on the line before its fence; it must
still compile (top-level ``await`` allowed). Nothing else opts out.

Shell blocks (```` ```sh ````, ``console``, ``bash``, ``shell``) that invoke
``palfrey …`` have their arguments parsed by the real parser and their
configuration loaded without serving, so a renamed flag or a bad value fails
here; a ``$ palfrey …`` line followed by ``palfrey: error: …`` must fail with
exactly that message. Pages are found by glob, so new pages are covered
without editing this file.
"""

from __future__ import annotations

import ast
import inspect
import logging
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

import palfrey
from palfrey.asgi.lifespan import LifespanFailure
from palfrey.config.cli import parse_command_line
from palfrey.config.errors import ConfigError
from palfrey.config.sources import (
    NO_APP_MESSAGE,
    Setting,
    build_config,
    read_command_line,
    read_config_file,
    read_environment,
)

ROOT = Path(__file__).resolve().parent.parent
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
FRAGMENT_MARKER = "<!-- sample: fragment -->"
SHELL_LANGUAGES = {"sh", "console", "bash", "shell"}
#: Seconds a sample may take to start and answer; generous for a loaded CI machine.
DEADLINE = 15.0
URL = re.compile(r"https?://[\w.\-\[\]:]+")


@attrs.frozen
class Block:
    """One fenced block: where it is, its language, its text and whether it is marked a fragment."""

    page: Path
    line: int
    language: str
    source: str
    fragment: bool
    #: For shell blocks: the line after each command line, to spot expected errors.
    lines: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def fenced_blocks(page: Path) -> Iterator[Block]:
    """Every fenced block of ``page`` (fences at the start of a line, as MkDocs reads them)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        match = re.match(r"^(`{3,}|~{3,})\s*([\w+-]*)", lines[index])
        if match is None:
            index += 1
            continue
        fence, language = match[1], match[2].lower()
        start = index
        body: list[str] = []
        index += 1
        while index < len(lines) and not lines[index].startswith(fence):
            body.append(lines[index])
            index += 1
        index += 1
        previous = lines[start - 1].strip() if start > 0 else ""
        yield Block(
            page=page,
            line=start + 1,
            language=language,
            source="\n".join(body) + "\n",
            fragment=previous == FRAGMENT_MARKER,
            lines=tuple(body),
        )


def all_blocks() -> list[Block]:
    return [block for page in PAGES if page.exists() for block in fenced_blocks(page)]


PYTHON_BLOCKS = [block for block in all_blocks() if block.language in ("python", "py")]


# --- Classifying Python samples -------------------------------------------------------


def _defined_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _calls(tree: ast.AST, dotted: str) -> bool:
    """Whether ``tree`` calls ``dotted`` (e.g. ``palfrey.run``) anywhere."""
    owner, _, attribute = dotted.partition(".")
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == attribute
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == owner
        for node in ast.walk(tree)
    )


def _top_level_call(tree: ast.Module, dotted: str) -> bool:
    return any(isinstance(node, ast.Expr) and _calls(node, dotted) for node in tree.body)


def kind_of(block: Block) -> str:
    """What harness a sample needs; see the module docstring."""
    if block.fragment:
        return "fragment"
    text = block.source.strip()
    if "\n" not in text and re.match(r"(async\s+)?def\s", text) and not text.endswith(":"):
        return "signature"
    tree = ast.parse(block.source)
    if _calls(tree, "palfrey.run"):
        return "run"
    if _top_level_call(tree, "trio.run"):
        return "program"
    defined = _defined_names(tree)
    if any(name.startswith("test_") for name in defined):
        return "test"
    if "app" in defined:
        return "app"
    return "unclassified"


def _uses_app(tree: ast.Module) -> bool:
    return any(
        isinstance(node, ast.Name) and node.id == "app" and isinstance(node.ctx, ast.Load)
        for node in ast.walk(tree)
    )


def definitions(source: str) -> str:
    """The imports, functions, classes and assignments of ``source``: its app without its main."""
    kept = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    tree = ast.parse(source)
    nodes = [node for node in tree.body if isinstance(node, (*kept, ast.Assign))]
    return "\n\n".join(ast.unparse(node) for node in nodes) + "\n"


def quickstart_app() -> str:
    for block in PYTHON_BLOCKS:
        if block.page.name == "quickstart.md" and kind_of(block) == "app":
            return block.source
    raise AssertionError("docs/quickstart.md has no application sample")


def with_context(block: Block) -> str:
    """``block``'s source, preceded by the ``app`` it uses but does not define."""
    tree = ast.parse(block.source)
    if "app" in _defined_names(tree) or not _uses_app(tree):
        return block.source
    earlier = [
        other
        for other in PYTHON_BLOCKS
        if other.page == block.page
        and other.line < block.line
        and not other.fragment
        and kind_of(other) != "signature"
        and "app" in _defined_names(ast.parse(other.source))
    ]
    context = earlier[-1].source if earlier else quickstart_app()
    return definitions(context) + "\n" + block.source


def load_module(source: str, name: str) -> types.ModuleType:
    """``source`` executed as a module (not ``__main__``), for its definitions."""
    module = types.ModuleType(name)
    # The docs' own samples, run as the reader would run them.
    exec(compile(source, name, "exec"), module.__dict__)
    return module


# --- Running Python samples --------------------------------------------------------------


def _read_lines(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


@attrs.define
class Program:
    """A sample running in a subprocess, its merged output read by a thread."""

    process: subprocess.Popen[str]
    lines: queue.Queue[str | None] = attrs.Factory(queue.Queue)
    output: list[str] = attrs.Factory(list)

    @classmethod
    def start(cls, source: str, cwd: Path) -> Program:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env = {key: value for key, value in env.items() if not key.startswith("PALFREY_")}
        env["PYTHONPATH"] = os.pathsep.join([str(cwd), str(ROOT)])
        # stop() is Ctrl+C. A suite run as a background job has SIGINT ignored (POSIX
        # shells do that to asynchronous commands), which a child inherits, and Python
        # then installs no KeyboardInterrupt handler. A handled signal is reset to its
        # default in the child, so the suite handles it while the child starts.
        ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        if ignored:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", source],
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        finally:
            if ignored:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
        program = cls(process)
        threading.Thread(
            target=_read_lines, args=(process.stdout, program.lines), daemon=True
        ).start()
        return program

    def wait_for_url(self) -> str | None:
        """The first URL the program prints, or None if it exits first."""
        while True:
            try:
                line = self.lines.get(timeout=DEADLINE)
            except queue.Empty:
                raise AssertionError(f"no URL within {DEADLINE}s:\n{self.text}") from None
            if line is None:
                return None
            self.output.append(line)
            match = URL.search(line)
            if match is not None:
                return match[0]

    def stop(self) -> int:
        """Interrupt the program if it still runs (Ctrl+C); its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=DEADLINE)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            while True:
                try:
                    line = self.lines.get(timeout=1)
                except queue.Empty:
                    break
                if line is None:
                    break
                self.output.append(line)

    @property
    def text(self) -> str:
        return "".join(self.output)


def _get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=DEADLINE)


#: Runs before a ``palfrey.run`` sample: validate its options as given, then serve on port 0.
RUN_PRELUDE = textwrap.dedent(
    """
    import palfrey
    from palfrey.cli import run as _real_run

    def _run(app, **options):
        palfrey.Config(app=app, **options)  # the sample's own options must be valid
        _real_run(app, **{**options, "host": "127.0.0.1", "port": 0})

    palfrey.run = _run
    """
)


def run_program(block: Block, tmp_path: Path) -> None:
    tree = ast.parse(block.source)
    targets = [
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and _calls(node, "palfrey.run")
        and node.args
        and isinstance(node.args[0], ast.Constant)
    ]
    assert targets, "palfrey.run() is called without an import string"
    module_name = str(targets[0]).partition(":")[0]
    module_path = tmp_path.joinpath(*module_name.split(".")).with_suffix(".py")
    module_path.parent.mkdir(parents=True, exist_ok=True)
    for parent in module_path.parent.relative_to(tmp_path).parents:
        if parent != Path("."):
            (tmp_path / parent / "__init__.py").touch()
    if module_path.parent != tmp_path:
        (module_path.parent / "__init__.py").touch()
    module_path.write_text(quickstart_app())
    program = Program.start(RUN_PRELUDE + "\n" + with_context(block), tmp_path)
    try:
        url = program.wait_for_url()
        assert url is not None, f"the program exited without serving:\n{program.text}"
        assert _get(url).status_code == 200
    finally:
        status = program.stop()
    assert status == 0, program.text


def run_trio_program(block: Block, tmp_path: Path) -> None:
    program = Program.start(with_context(block), tmp_path)
    interrupted = False
    try:
        url = program.wait_for_url()
        if url is not None and program.process.poll() is None:
            try:
                response = _get(url)
            except httpx.ConnectError:
                # Only acceptable if the program has finished by itself meanwhile.
                assert program.process.wait(timeout=DEADLINE) == 0, program.text
            else:
                assert response.status_code == 200, program.text
        interrupted = program.process.poll() is None
    finally:
        status = program.stop()
    if interrupted:
        # trio.run re-raises Ctrl+C as KeyboardInterrupt: that, and nothing else, may end it.
        assert status == 0 or "KeyboardInterrupt" in program.text, program.text
        assert "Error" not in program.text.replace("KeyboardInterrupt", ""), program.text
    else:
        assert status == 0, program.text


def run_tests(block: Block) -> None:
    module = load_module(with_context(block), f"sample_{block.line}")
    tests = [value for name, value in vars(module).items() if name.startswith("test_")]
    for test in tests:

        async def bounded(test: Any = test) -> None:
            with trio.fail_after(DEADLINE):
                await test()

        trio.run(bounded)


def serve_app(block: Block, caplog: pytest.LogCaptureFixture) -> None:
    source = with_context(block)
    module = load_module(source, f"sample_{block.line}")
    # "auto" would take a crash in a lifespan handler for "unsupported" and carry on.
    lifespan = "on" if '"lifespan"' in source else "off"
    config = palfrey.Config(host="127.0.0.1", port=0, lifespan=lifespan)

    async def main() -> httpx.Response:
        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                [url] = await nursery.start(palfrey.serve, module.app, config)
                async with httpx.AsyncClient() as client:
                    response = await client.get(url + "/")
                nursery.cancel_scope.cancel()
        return response

    with caplog.at_level(logging.INFO, logger="palfrey"):
        try:
            response = trio.run(main)
        except LifespanFailure as exc:
            pytest.fail(f"{block.name}: lifespan startup failed: {exc}\n{caplog.text}")
    exceptions = [record.getMessage() for record in caplog.records if record.exc_info]
    assert not exceptions, exceptions
    # ``...`` marks a branch the sample leaves out (it answers 500); otherwise it must serve.
    if not any(
        isinstance(node, ast.Constant) and node.value is Ellipsis
        for node in ast.walk(ast.parse(block.source))
    ):
        assert response.status_code == 200, caplog.text


def check_signature(block: Block) -> None:
    tree = ast.parse(block.source.strip() + ": ...")
    [node] = tree.body
    assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    real = getattr(palfrey, node.name)
    documented = [arg.arg for arg in (*node.args.args, *node.args.kwonlyargs)]
    assert documented == list(inspect.signature(real).parameters), block.source
    assert inspect.iscoroutinefunction(real) == isinstance(node, ast.AsyncFunctionDef)


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda block: block.name)
def test_python_sample_runs(block: Block, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Each Python sample runs as its kind requires (see the module docstring)."""
    kind = kind_of(block)
    if kind == "fragment":
        compile(block.source, block.name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    elif kind == "signature":
        check_signature(block)
    elif kind == "run":
        run_program(block, tmp_path)
    elif kind == "program":
        run_trio_program(block, tmp_path)
    elif kind == "test":
        run_tests(block)
    elif kind == "app":
        serve_app(block, caplog)
    else:
        pytest.fail(
            f"{block.name}: not a runnable sample (no app, test, trio.run or palfrey.run);"
            f" complete it, or mark it with {FRAGMENT_MARKER!r} on the line before the fence"
        )


def test_samples_are_found() -> None:
    """The extraction itself works: a silent zero would make every check above vacuous."""
    kinds = {kind_of(block) for block in PYTHON_BLOCKS}
    assert {"app", "run", "program"} <= kinds
    fragments = [block.name for block in PYTHON_BLOCKS if block.fragment]
    # Opting out is for the rare true fragment; most samples must run.
    assert len(fragments) * 3 <= len(PYTHON_BLOCKS), fragments


# --- Shell samples -------------------------------------------------------------------------


@attrs.frozen
class Command:
    """One ``palfrey`` invocation in a shell block."""

    block: Block
    text: str
    argv: tuple[str, ...]
    environ: dict[str, str]
    #: The message after ``palfrey: error:`` on the next line, when the docs show it failing.
    expected_error: str | None
    #: The docs describe a config file whose content is not on disk (``# with port = true``).
    hypothetical_file: bool


def _commands_in(block: Block) -> Iterator[Command]:
    logical: list[tuple[str, str]] = []  # (command, the line after it)
    pending = ""
    lines = list(block.lines)
    for index, raw in enumerate(lines):
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        following = lines[index + 1] if index + 1 < len(lines) else ""
        logical.append((pending + line, following))
        pending = ""
    for text, following in logical:
        shown = text.strip()
        if block.language == "console" or shown.startswith("$ "):
            if not shown.startswith("$ "):
                continue  # output, not a command
            shown = shown[2:]
        try:
            tokens = shlex.split(shown, comments=True)
        except ValueError:
            continue
        segments: list[list[str]] = [[]]
        for token in tokens:
            if token in ("&&", "||", ";", "|"):
                segments.append([])
            else:
                segments[-1].append(token)
        for segment in segments:
            environ: dict[str, str] = {}
            while segment and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", segment[0]):
                key, _, value = segment.pop(0).partition("=")
                environ[key] = value
            if not segment:
                continue
            if Path(segment[0]).name == "palfrey":
                argv = segment[1:]
            elif Path(segment[0]).name.startswith("python") and segment[1:3] == ["-m", "palfrey"]:
                argv = segment[3:]
            else:
                continue
            error = following.strip()
            prefix = "palfrey: error: "
            expected = error[len(prefix) :] if error.startswith(prefix) else None
            yield Command(
                block=block,
                text=shown,
                argv=tuple(argv),
                environ=environ,
                expected_error=expected,
                hypothetical_file=re.search(r"\s#\s*with\b", shown) is not None,
            )


COMMANDS = [
    command
    for block in all_blocks()
    if block.language in SHELL_LANGUAGES
    for command in _commands_in(block)
]

#: Messages that only say a file named in the docs is absent from this checkout
#: (certificates under /etc, the reader's own config file): the rest was valid.
ABSENT_FILE = re.compile(r"(does not exist|not found)$")


def load_command(command: Command) -> None:
    """Parse and load ``command``'s configuration as ``palfrey`` would, without serving."""
    parsed = parse_command_line(list(command.argv))
    settings: dict[str, Setting] = {}
    if parsed.config_path is not None and not command.hypothetical_file:
        path = ROOT / parsed.config_path
        settings.update(read_config_file(str(path) if path.exists() else parsed.config_path))
    settings.update(read_environment(command.environ))
    settings.update(read_command_line(parsed))
    if settings.get("app") is None and not command.hypothetical_file:
        raise ConfigError(NO_APP_MESSAGE)
    build_config(settings)


@pytest.mark.parametrize(
    "command", COMMANDS, ids=lambda command: f"{command.block.name}:{command.text[:40]}"
)
def test_shell_command_is_accepted(command: Command) -> None:
    """A documented ``palfrey`` command parses and loads; a documented failure fails as shown."""
    if any(arg in ("--help", "-h", "--version") for arg in command.argv):
        with pytest.raises(SystemExit):
            parse_command_line(list(command.argv))
        return
    if command.expected_error is not None:
        if command.hypothetical_file:
            parse_command_line(list(command.argv))  # the file's content is only described
            return
        with pytest.raises(ConfigError) as caught:
            load_command(command)
        assert str(caught.value) == command.expected_error
        return
    try:
        load_command(command)
    except ConfigError as exc:
        if not ABSENT_FILE.search(str(exc)) and str(exc) != NO_APP_MESSAGE:
            raise


def test_shell_commands_are_found() -> None:
    """The extraction finds the documented commands, including the failing examples."""
    assert len(COMMANDS) >= 10
    assert any(command.expected_error is not None for command in COMMANDS)
