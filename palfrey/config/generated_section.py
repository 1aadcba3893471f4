"""A section of a docs page generated from the code, kept between two markers.

The limits table (``docs/limits.md``) and the configuration reference
(``docs/configuration.md``) are both rendered from declarations in
``palfrey/config/`` and checked by the tests, so neither can drift from the
code. What they share lives here: swapping the text between the markers,
and the ``print`` / ``write`` / ``check`` command each runs as ``python -m``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs


@attrs.frozen(slots=True)
class GeneratedSection:
    """``render()``'s text, between ``start_marker`` and ``end_marker`` of a page."""

    #: What the section is, for messages: "the limits table".
    what: str
    #: The module that runs :meth:`main` as ``python -m``.
    module: str
    start_marker: str
    end_marker: str
    render: Callable[[], str]

    def replace(self, text: str) -> str:
        """``text`` with the section between the markers replaced by a fresh render."""
        if self.start_marker not in text or self.end_marker not in text:
            raise ValueError(
                f"the page lacks the markers {self.start_marker} and {self.end_marker}"
            )
        start = text.index(self.start_marker) + len(self.start_marker)
        end = text.index(self.end_marker)
        return f"{text[:start]}\n\n{self.render()}\n{text[end:]}"

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Print the section, or write or check the page's copy; 1 when ``check`` finds it stale."""
        parser = argparse.ArgumentParser(
            prog=f"python -m {self.module}",
            description=f"Print {self.what}, or write or check it in a Markdown file"
            " between its markers.",
        )
        parser.add_argument("action", choices=("print", "write", "check"))
        parser.add_argument("file", nargs="?", type=Path, help="the page (write and check)")
        args = parser.parse_args(argv)
        if args.action == "print":
            sys.stdout.write(self.render())
            return 0
        if args.file is None:
            parser.error(f"{args.action} needs the file")
        path: Path = args.file
        text = path.read_text()
        updated = self.replace(text)
        if args.action == "check":
            if updated != text:
                sys.stderr.write(
                    f"{path}: {self.what} is stale; run python -m {self.module} write {path}\n"
                )
                return 1
            return 0
        path.write_text(updated)
        return 0
