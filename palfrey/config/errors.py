"""The one exception type for mistakes a user can fix by editing their input.

Everything that reads user input (command line, environment, config file,
``.env`` file, the application import string) raises :class:`ConfigError`
with a single line that names where the bad value came from, so the CLI can
print it without a traceback and the user knows exactly what to edit.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConfigError(Exception):
    """A user mistake in configuration; the message is one line naming its source."""


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """A ``" (did you mean 'x'?)"`` suffix, or ``""`` when nothing is close.

    Typos in option names are the most common config mistake, and the nearest
    valid name is usually all the user needs to see.
    """
    matches = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean {matches[0]!r}?)" if matches else ""
