"""A deliberately small ``.env`` reader for ``--env-file``.

It covers what ``.env`` files commonly contain and nothing that needs a
specification nobody agrees on: ``KEY=VALUE`` lines, an optional ``export``
prefix, blank lines and ``#`` comments (also after a value, when preceded by
whitespace), and values in single quotes (taken literally) or double quotes
(with ``\\n``, ``\\r``, ``\\t``, ``\\"`` and ``\\\\`` escapes). There is no
variable interpolation and no multi-line value; anything else is an error
naming the file and line, rather than a silently wrong environment.

Variables already present in the environment win over the file, so a
deployment can override a checked-in ``.env`` without editing it.
"""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping

from palfrey.config.errors import ConfigError

_LINE = re.compile(r"(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=(?P<rest>.*)")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


class _Malformed(ValueError):
    """A line the parser cannot accept; turned into a ConfigError with the line number."""


def _double_quoted(rest: str) -> tuple[str, str]:
    """The unescaped value of ``"..."`` at the start of ``rest`` and what follows it."""
    chars: list[str] = []
    index = 1
    while index < len(rest):
        char = rest[index]
        if char == '"':
            return "".join(chars), rest[index + 1 :]
        if char == "\\" and index + 1 < len(rest):
            following = rest[index + 1]
            chars.append(_ESCAPES.get(following, "\\" + following))
            index += 2
            continue
        chars.append(char)
        index += 1
    raise _Malformed("unterminated double-quoted value")


def _value(rest: str) -> str:
    """The value after ``=``; ``rest`` keeps its leading space so ``KEY= # note`` is empty."""
    quoted = rest.lstrip()
    if quoted.startswith('"'):
        value, tail = _double_quoted(quoted)
    elif quoted.startswith("'"):
        end = quoted.find("'", 1)
        if end == -1:
            raise _Malformed("unterminated single-quoted value")
        value, tail = quoted[1:end], quoted[end + 1 :]
    else:
        return re.split(r"\s#", rest, maxsplit=1)[0].strip()
    tail = tail.strip()
    if tail and not tail.startswith("#"):
        raise _Malformed(f"unexpected text after the closing quote: {tail!r}")
    return value


def parse_env(text: str, source: str) -> dict[str, str]:
    """The variables defined in ``text``; ``source`` names the file in errors."""
    variables: dict[str, str] = {}
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise ConfigError(f"{source}, line {number}: expected KEY=VALUE, got {line!r}")
        try:
            variables[match["key"]] = _value(match["rest"])
        except _Malformed as exc:
            raise ConfigError(f"{source}, line {number}: {exc}") from None
    return variables


def load_env_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """The variables defined in the ``.env`` file at ``path``."""
    try:
        with open(path, encoding="utf-8-sig") as file:
            text = file.read()
    except FileNotFoundError:
        raise ConfigError(f"env file {os.fspath(path)!r} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not valid UTF-8"
        raise ConfigError(f"env file {os.fspath(path)!r} could not be read: {reason}") from None
    return parse_env(text, os.fspath(path))


def apply_env(
    variables: dict[str, str], environ: MutableMapping[str, str] | None = None
) -> dict[str, str]:
    """Set ``variables`` in ``environ`` (default ``os.environ``) unless already set.

    Returns the variables that were actually applied.
    """
    target = os.environ if environ is None else environ
    applied = {key: value for key, value in variables.items() if key not in target}
    target.update(applied)
    return applied
