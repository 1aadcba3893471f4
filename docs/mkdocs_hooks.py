"""MkDocs hooks for the documentation site (``hooks:`` in ``mkdocs.yml``).

``docs/changelog.md`` includes the root ``CHANGELOG.md`` with
``pymdownx.snippets``. The changelog links to pages as ``docs/page.md``,
which is right on GitHub, where it sits at the repository root; on the site
it is rendered from ``docs/``, where the same page is ``page.md``. This
rewrites those links after the snippet is included and before MkDocs checks
links, so ``mkdocs build --strict`` still validates every one of them.
"""

from __future__ import annotations

import re
from typing import Any

from markdown import Extension, Markdown
from markdown.preprocessors import Preprocessor

#: An inline link or a reference definition whose target starts with ``docs/``.
_DOCS_LINK = re.compile(r"(\]\(|^\[[^\]]+\]:\s*)docs/")


class _DocsLinks(Preprocessor):
    def run(self, lines: list[str]) -> list[str]:
        return [_DOCS_LINK.sub(r"\1", line) for line in lines]


class DocsLinksExtension(Extension):
    def extendMarkdown(self, md: Markdown) -> None:  # Markdown's name for it
        # Below pymdownx.snippets (32), so it sees the included text.
        md.preprocessors.register(_DocsLinks(md), "palfrey_docs_links", 31)


def on_config(config: Any) -> Any:
    config.markdown_extensions.append(DocsLinksExtension())
    return config
