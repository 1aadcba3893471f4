"""Turning ``module:attribute`` into the application object.

A mistake in the import string itself (bad format, a module that does not
exist, a missing attribute) is a :class:`ConfigError` with a one-line message.
An exception raised while the user's module is being imported — including an
``ImportError`` for one of *its* dependencies — is a bug in the application,
not in the configuration, so it propagates with its real traceback.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Any

from palfrey.config.env_file import apply_env, load_env_file
from palfrey.config.errors import ConfigError
from palfrey.config.schema import Config
from palfrey.config.sources import NO_APP_MESSAGE


def _is_requested_module(missing: str | None, module_name: str) -> bool:
    """Whether a ModuleNotFoundError is about ``module_name`` itself or one of its parents."""
    if missing is None:
        return False
    return module_name == missing or module_name.startswith(missing + ".")


def import_from_string(text: str) -> Any:
    """The object named by ``text``, ``module:attribute`` with an optionally dotted attribute."""
    module_name, _, attribute_path = text.partition(":")
    names = attribute_path.split(".")
    if not module_name or not all(names):
        raise ConfigError(f"application {text!r} must be 'module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if not _is_requested_module(exc.name, module_name):
            raise
        raise ConfigError(
            f"cannot import application {text!r}: module {exc.name!r} not found"
        ) from None
    obj: Any = module
    owner = module_name
    for name in names:
        try:
            obj = getattr(obj, name)
        except AttributeError:
            raise ConfigError(
                f"cannot import application {text!r}: {owner!r} has no attribute {name!r}"
            ) from None
        owner = f"{owner}:{name}" if owner == module_name else f"{owner}.{name}"
    return obj


def _call_factory(factory: Any, name: str) -> Any:
    if not callable(factory):
        raise ConfigError(f"application factory {name} is not callable")
    try:
        inspect.signature(factory).bind()
    except TypeError as exc:
        raise ConfigError(
            f"application factory {name} cannot be called without arguments: {exc}"
        ) from None
    except ValueError:
        pass  # no introspectable signature (some builtins); calling it will tell
    return factory()


def load_app(config: Config) -> Any:
    """The application object ``config`` describes, ready for interface detection.

    ``app_dir`` goes first on ``sys.path`` and the env file is applied before
    importing, because applications commonly read settings at import time.
    """
    if config.app is None:
        raise ConfigError(NO_APP_MESSAGE)
    app_dir = os.path.abspath(config.app_dir)
    if not sys.path or sys.path[0] != app_dir:
        sys.path.insert(0, app_dir)
    if config.env_file is not None:
        apply_env(load_env_file(config.env_file))
    app = import_from_string(config.app) if isinstance(config.app, str) else config.app
    if config.factory:
        name = repr(config.app) if isinstance(config.app, str) else repr(app)
        app = _call_factory(app, name)
    return app
