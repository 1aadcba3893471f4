"""Why serving could not start; each message is meant for the user as it is."""

from __future__ import annotations


class ServeError(Exception):
    """Serving could not start; the runner prints the message and exits 1."""


class BindError(ServeError):
    """A listener could not be opened."""


class TLSSetupError(ServeError):
    """The certificate, key or CA file could not be loaded."""
