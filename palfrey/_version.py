"""The version of this source tree, in a module that imports nothing.

The package top, the ``--version`` flag and the package metadata
(``pyproject.toml``) all read it; keeping it apart means the command line can
report the version without importing the server.
"""

from __future__ import annotations

__version__ = "0.1.0"
