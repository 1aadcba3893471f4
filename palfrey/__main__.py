"""``python -m palfrey``: the same as the ``palfrey`` command."""

from __future__ import annotations

from palfrey.config.cli import entrypoint

if __name__ == "__main__":
    entrypoint()
