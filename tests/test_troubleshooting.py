"""``docs/troubleshooting.md`` lists every message Palfrey can print, with its cause and fix.

The list of messages is taken from the source, not from the page: every call
site that can reach a person running ``palfrey`` is collected with ``ast``
(``raise ConfigError/ServeError/...(...)``, validator ``ValueError``/``TypeError``
in the configuration modules, ``logger.warning/error/critical/exception``
calls, the rejection log lines, ``print(..., file=sys.stderr)``, and the few
functions whose return value is a message). Each message's literal text, with
its variable parts as wildcards, must appear on one line of the page, so a new
or reworded message without an entry fails here. Messages not worth a
troubleshooting entry are listed in :data:`UNDOCUMENTED` with the reason.

A few common mistakes are also run end to end through ``python -m palfrey``,
checking that what is printed is an entry of the page (its ``<placeholders>``
matching anything) and that the exit status is the one the page gives.
"""

from __future__ import annotations

import ast
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "palfrey"
PAGE = ROOT / "docs" / "troubleshooting.md"

#: Where user-facing messages come from: the command line, configuration, server
#: start-up and run time. Protocol modules are left out: what they reject reaches
#: the log only through the rejection and connection-error lines collected here.
SOURCES = (
    "cli.py",
    "config/*.py",
    "server/*.py",
    "transport/*.py",
    "asgi/*.py",
    "supervisor/*.py",
    "observability/access_format.py",
)
#: Not user-facing: maintainers' tools that regenerate docs/limits.md and the reference.
EXCLUDED_FILES = {"config/limits.py", "config/reference.py", "config/generated_section.py"}
#: Exceptions whose message is printed to the user as is.
USER_ERRORS = {
    "ConfigError",
    "ServeError",
    "BindError",
    "TLSSetupError",
    "AppInterfaceError",
    "LifespanFailure",
    "SystemExit",
}
#: In these modules a ValueError/TypeError is a validator's message that the
#: configuration loader turns into ``palfrey: error: <source>: <message>``.
VALIDATOR_MODULES = ("config/", "observability/access_format.py")
LOG_LEVELS = {"warning", "error", "critical", "exception"}
#: INFO lines worth an entry: an operator asks what they mean.
INFO_LOG_MODULES = {"transport/rejections.py"}
#: Functions whose returned strings are (parts of) messages.
MESSAGE_FUNCTIONS = {"trio_asyncio_problem", "describe_exit", "did_you_mean"}
#: A message whose longest literal part is shorter than this says nothing on its own
#: (``"%s"``, ``f"{source}: {exc}"``): its content is documented where it is raised.
MIN_LITERAL = 6

#: Messages with no entry, by their longest literal part, and why.
UNDOCUMENTED = {
    "unsupported loop ": "unreachable: Config's own choices reject any other --loop first",
    "unsupported interface ": "unreachable: Config's own choices reject other --interface values",
}

#: Placeholders the page writes for a message's variable parts: ``<path>``.
PLACEHOLDER = re.compile(r"<[^<>`]+>")
SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\d+|\*)?(?:\.\d+)?[sdrifgexXc%]")


@attrs.frozen
class Message:
    """A message template: its literal parts in order (variable parts between them)."""

    where: str
    parts: tuple[str, ...]

    @property
    def longest(self) -> str:
        return max(self.parts, key=lambda part: len(part.strip()), default="")

    def pattern(self) -> re.Pattern[str]:
        """The literal parts in order, anything between them, all on one line of the page."""
        parts = list(self.parts)
        # Spaces next to a variable part at either end belong to what the page
        # writes in front (``<source>: ``), which entries may leave out.
        parts[0] = parts[0].lstrip()
        parts[-1] = parts[-1].rstrip()
        return re.compile(".*?".join(re.escape(part) for part in parts))


def _literal_parts(node: ast.expr) -> list[str | None]:
    """The literal text of a message expression; ``None`` stands for a variable part."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        out: list[str | None] = []
        for index, piece in enumerate(SPEC.split(node.value.replace("%%", "\x00"))):
            if index:
                out.append(None)
            out.append(piece.replace("\x00", "%"))
        return out
    if isinstance(node, ast.JoinedStr):
        out = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                out.append(str(value.value))
            else:
                out.append(None)
        return out
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _literal_parts(node.left) + _literal_parts(node.right)
    return [None]


def _message(node: ast.expr, where: str) -> Message | None:
    parts: list[str] = []
    current = ""
    for piece in _literal_parts(node):
        if piece is None:
            if current:
                parts.append(current)
            current = ""
        else:
            current += piece
    if current:
        parts.append(current)
    message = Message(where, tuple(parts))
    if len(message.longest.strip()) < MIN_LITERAL:
        return None
    return message


def _call_name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _messages_in(relative: str, tree: ast.Module) -> Iterator[tuple[ast.expr, int]]:
    validators = relative.startswith(VALIDATOR_MODULES)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _call_name(node.func) in USER_ERRORS and node.args:
            # Raised, or built by a helper and raised by its caller.
            yield node.args[0], node.lineno
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
            if validators and _call_name(node.exc.func) in ("ValueError", "TypeError"):
                yield node.exc.args[0], node.lineno
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            level = node.func.attr
            receiver = _call_name(node.func.value)
            logged = receiver.endswith("logger") and (
                level in LOG_LEVELS or (level == "info" and relative in INFO_LOG_MODULES)
            )
            if logged or (level == "write" and receiver == "stderr"):
                yield node.args[0], node.lineno
        if (
            isinstance(node, ast.Call)
            and _call_name(node.func) == "print"
            and any(
                keyword.arg == "file" and _call_name(keyword.value) == "stderr"
                for keyword in node.keywords
            )
            and node.args
        ):
            yield node.args[0], node.lineno
        if isinstance(node, ast.FunctionDef) and node.name in MESSAGE_FUNCTIONS:
            for inner in ast.walk(node):
                if isinstance(inner, ast.Return) and inner.value is not None:
                    yield inner.value, inner.lineno
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id.endswith("_MESSAGE")
            for target in node.targets
        ):
            yield node.value, node.lineno


def collect_messages() -> list[Message]:
    """Every user-facing message template in the sources listed in :data:`SOURCES`."""
    found: dict[tuple[str, ...], Message] = {}
    for pattern in SOURCES:
        for path in sorted(PACKAGE.glob(pattern)):
            relative = path.relative_to(PACKAGE).as_posix()
            if relative in EXCLUDED_FILES:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node, line in _messages_in(relative, tree):
                message = _message(node, f"palfrey/{relative}:{line}")
                if message is not None:
                    found.setdefault(message.parts, message)
    return list(found.values())


MESSAGES = collect_messages()


def page_lines() -> list[str]:
    return PAGE.read_text(encoding="utf-8").splitlines()


def documented(message: Message) -> bool:
    pattern = message.pattern()
    return any(pattern.search(line) for line in page_lines())


def test_messages_are_collected() -> None:
    """The collector finds the messages: an empty list would make every check vacuous."""
    longest = {message.longest for message in MESSAGES}
    assert len(MESSAGES) >= 60
    for expected in ("could not bind ", "Exception in ASGI application", "unknown key "):
        assert any(expected in text for text in longest), expected


def test_allow_list_is_short_and_current() -> None:
    """Every excused message still exists, and excusing stays the exception."""
    longest = {message.longest for message in MESSAGES}
    stale = [text for text in UNDOCUMENTED if text not in longest]
    assert not stale, f"no such message any more, remove from UNDOCUMENTED: {stale}"
    assert len(UNDOCUMENTED) * 8 <= len(MESSAGES)


@pytest.mark.parametrize(
    "message", [m for m in MESSAGES if m.longest not in UNDOCUMENTED], ids=lambda m: m.where
)
def test_message_is_documented(message: Message) -> None:
    """The message's literal text, in order, is on one line of the troubleshooting page."""
    assert documented(message), (
        f"{message.where}: add an entry to docs/troubleshooting.md showing"
        f" {' <…> '.join(message.parts)!r} (variable parts as <placeholders>),"
        " with its cause and fix"
    )


# --- End to end -------------------------------------------------------------------------


def documented_messages() -> list[re.Pattern[str]]:
    """Each entry's code span as a pattern for the end of a printed line.

    ``<placeholders>`` match anything; spans with little literal text besides
    the ``palfrey: error:`` prefix (``palfrey: error: <message>``) would match
    any error, so they are left out.
    """
    patterns = []
    for span in re.findall(r"`([^`]+)`", PAGE.read_text(encoding="utf-8")):
        pieces = PLACEHOLDER.split(span)
        literal = "".join(pieces).replace("palfrey: error:", "").strip(" :")
        if len(literal) >= 12:
            patterns.append(re.compile(".+?".join(re.escape(piece) for piece in pieces) + "$"))
    return patterns


def assert_documented_line(stderr: str, needle: str) -> str:
    """The stderr line containing ``needle``, which must be a message the page documents."""
    lines = [line for line in stderr.splitlines() if needle in line]
    assert lines, f"{needle!r} not printed; stderr was:\n{stderr}"
    line = lines[0]
    # Log lines carry a level and time prefix; the message is what follows.
    assert any(pattern.search(line) for pattern in documented_messages()), (
        f"printed but not on docs/troubleshooting.md: {line!r}"
    )
    return line


def run_palfrey(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "palfrey", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


HELLO_APP = """
async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})
"""


def test_unknown_key_in_the_config_file(tmp_path: Path) -> None:
    """A misspelt TOML key names the file and suggests the right key; status 2."""
    (tmp_path / "palfrey.toml").write_text('app = "main:app"\nprot = 8000\n')
    result = run_palfrey(["--config", "palfrey.toml"], tmp_path)
    line = assert_documented_line(result.stderr, "unknown key")
    assert line == "palfrey: error: palfrey.toml: unknown key 'prot' (did you mean 'port'?)"
    assert result.returncode == 2


def test_application_that_cannot_be_imported(tmp_path: Path) -> None:
    """A module that does not exist is one line, not a traceback."""
    result = run_palfrey(["nosuchmodule:app"], tmp_path)
    assert_documented_line(result.stderr, "cannot import application")
    assert "Traceback" not in result.stderr
    assert result.returncode == 1


def test_port_out_of_range(tmp_path: Path) -> None:
    """A bad --port is rejected before anything starts; status 2."""
    result = run_palfrey(["main:app", "--port", "70000"], tmp_path)
    line = assert_documented_line(result.stderr, "--port")
    assert "must be an integer from 0 to 65535, got 70000" in line
    assert result.returncode == 2


def test_missing_certificate_file(tmp_path: Path) -> None:
    """A certificate path that does not exist is a configuration error; status 2."""
    (tmp_path / "main.py").write_text(HELLO_APP)
    result = run_palfrey(
        ["main:app", "--port", "0", "--lifespan", "off", "--ssl-certfile", "missing.pem"],
        tmp_path,
    )
    line = assert_documented_line(result.stderr, "missing.pem")
    assert line == "palfrey: error: --ssl-certfile: file 'missing.pem' does not exist"
    assert "Traceback" not in result.stderr
    assert result.returncode == 2


def test_certificate_that_is_not_pem(tmp_path: Path) -> None:
    """A certificate file that OpenSSL can't load fails the start with one log line; status 1."""
    (tmp_path / "main.py").write_text(HELLO_APP)
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    result = run_palfrey(
        ["main:app", "--port", "0", "--lifespan", "off", "--ssl-certfile", "garbage.pem"],
        tmp_path,
    )
    line = assert_documented_line(result.stderr, "garbage.pem")
    assert "could not load the TLS certificate 'garbage.pem': " in line
    assert "Traceback" not in result.stderr
    assert result.returncode == 1


def test_access_log_format_error_names_the_option_once(tmp_path: Path) -> None:
    result = run_palfrey(["main:app", "--access-log-format", "%(zz)s"], tmp_path)
    line = assert_documented_line(result.stderr, "access log atom")
    assert line == "palfrey: error: --access-log-format: unknown access log atom '%(zz)s'"
    assert result.returncode == 2


def test_missing_env_file_names_the_option_once(tmp_path: Path) -> None:
    result = run_palfrey(["main:app", "--env-file", "missing.env"], tmp_path)
    line = assert_documented_line(result.stderr, "missing.env")
    assert line == "palfrey: error: --env-file: 'missing.env' not found"
    assert result.returncode == 2


def test_run_keyword_outside_its_choices(tmp_path: Path) -> None:
    """``palfrey.run(app, loop="uvloop")`` prints one sentence, as the page shows."""
    (tmp_path / "serve.py").write_text(
        "import palfrey\n\nasync def app(scope, receive, send):\n    pass\n\n"
        'palfrey.run(app, loop="uvloop")\n'
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "serve.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    line = assert_documented_line(result.stderr, "uvloop")
    assert line == "palfrey: error: loop: must be one of trio, asyncio, got 'uvloop'"
    assert result.returncode == 1


def test_address_already_in_use(tmp_path: Path) -> None:
    """Binding a port another socket holds fails with one log line and status 1."""
    (tmp_path / "main.py").write_text(HELLO_APP)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_palfrey(
            ["main:app", "--host", "127.0.0.1", "--port", str(port), "--lifespan", "off"],
            tmp_path,
        )
    assert_documented_line(result.stderr, "address already in use")
    assert result.returncode == 1
