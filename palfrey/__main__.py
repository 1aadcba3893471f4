"""``python -m palfrey``: the same as the ``palfrey`` command."""

from __future__ import annotations

from palfrey.cli import entrypoint

if __name__ == "__main__":
    entrypoint()
