from __future__ import annotations

import subprocess
import sys

import pytest

from palfrey.config import ConfigError
from palfrey.config.env_file import apply_env, load_env_file, parse_env


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("KEY=value", {"KEY": "value"}),
        ("export KEY=value", {"KEY": "value"}),
        ("  KEY =  value  ", {"KEY": "value"}),
        ("KEY=", {"KEY": ""}),
        ("KEY=a=b", {"KEY": "a=b"}),
        ("KEY=value # comment", {"KEY": "value"}),
        ("KEY=a#b", {"KEY": "a#b"}),
        ("KEY=#not-a-comment", {"KEY": "#not-a-comment"}),
        ("KEY= # only a comment", {"KEY": ""}),
        ("KEY='single # kept \\n literal'", {"KEY": "single # kept \\n literal"}),
        ('KEY="tab\\there\\nnew \\"q\\" \\\\ \\x"', {"KEY": 'tab\there\nnew "q" \\ \\x'}),
        ('KEY="quoted" # comment', {"KEY": "quoted"}),
        ("KEY=  'padded'  ", {"KEY": "padded"}),
        ('KEY=""', {"KEY": ""}),
        ("export=1", {"export": "1"}),
        ("KEY=$OTHER", {"KEY": "$OTHER"}),
    ],
)
def test_parse_line(line, expected):
    assert parse_env(line, ".env") == expected


def test_comments_blank_lines_and_last_value_wins():
    text = "# heading\n\nA=1\n   # indented comment\nB=2\nA=3\n"
    assert parse_env(text, ".env") == {"A": "3", "B": "2"}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("A=1\nnot a pair\n", "line 2: expected KEY=VALUE, got 'not a pair'"),
        ("1KEY=x", "line 1: expected KEY=VALUE, got '1KEY=x'"),
        ('A="open', "line 1: unterminated double-quoted value"),
        ("A='open", "line 1: unterminated single-quoted value"),
        ('A="x" y', "line 1: unexpected text after the closing quote: 'y'"),
    ],
)
def test_malformed(text, reason):
    with pytest.raises(ConfigError) as info:
        parse_env(text, "app.env")
    assert str(info.value) == f"app.env, {reason}"


def test_load_file(tmp_path):
    path = tmp_path / ".env"
    path.write_text("\ufeffA=1\nexport B='two'\n", encoding="utf-8")
    assert load_env_file(path) == {"A": "1", "B": "two"}


def test_load_file_error_names_file(tmp_path):
    path = tmp_path / ".env"
    path.write_text("A=1\nB\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{path}, line 2: "):
        load_env_file(path)


def test_missing_file(tmp_path):
    path = str(tmp_path / "missing.env")
    with pytest.raises(ConfigError) as info:
        load_env_file(path)
    assert str(info.value) == f"env file {path!r} not found"


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="could not be read"):
        load_env_file(tmp_path)


def test_apply_does_not_override():
    environ = {"A": "already"}
    applied = apply_env({"A": "file", "B": "file"}, environ)
    assert environ == {"A": "already", "B": "file"}
    assert applied == {"B": "file"}


@pytest.mark.parametrize("content", [None, 'A="unterminated\n'])
def test_a_bad_env_file_is_a_configuration_error_exit_2(tmp_path, content):
    path = tmp_path / "app.env"
    if content is not None:
        path.write_text(content)
    result = subprocess.run(
        [sys.executable, "-m", "palfrey", "--env-file", str(path), "palfrey.demo:app"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result
    assert result.stderr.startswith("palfrey: error: --env-file: "), result.stderr
    assert "Traceback" not in result.stderr
