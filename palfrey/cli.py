"""The ``palfrey`` command and ``palfrey.run()``: read the configuration, then serve.

The top of the layers: it chooses between checking the configuration, one
serving process, and a supervisor with workers or reload. Nothing imports it
but the console script and ``python -m palfrey``.
"""

from __future__ import annotations

import sys
from typing import Any

from palfrey.config.errors import ConfigError
from palfrey.config.schema import Config

EXIT_CONFIG_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    """Run the server as the command line asks; return the process exit status."""
    from palfrey.config.sources import build_config, load_settings  # noqa: PLC0415

    try:
        settings = load_settings(argv)
        if _wants_check(settings):
            from palfrey.config.check import check_config  # noqa: PLC0415

            return check_config(settings)
        config = build_config(settings)
    except ConfigError as exc:
        print(f"palfrey: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    return run_config(config)


def _wants_check(settings: dict[str, Any]) -> bool:
    setting = settings.get("check_config")
    return setting is not None and setting.value is True


def run_config(config: Config) -> int:
    """Serve ``config`` in this process, or under a supervisor when it asks for one.

    The server modules are imported only here, once the configuration is
    known to be good, so ``--help`` and configuration errors stay fast.
    """
    if config.uses_supervisor:
        from palfrey.supervisor.supervisor import supervise  # noqa: PLC0415

        return supervise(config)
    from palfrey.server.runner import run_config as run_in_process  # noqa: PLC0415

    return run_in_process(config)


def run(app: Any, **options: Any) -> None:
    """Serve ``app`` (an object or an import string) with Uvicorn-style keyword options.

    Exits the process with a non-zero status if serving could not start.
    ``workers`` and ``reload`` need ``app`` as an import string, as in Uvicorn.
    """
    from palfrey.config.sources import build_config, keyword_settings  # noqa: PLC0415

    try:
        config = build_config(keyword_settings(app, options))
    except ConfigError as exc:
        raise SystemExit(f"palfrey: error: {exc}") from None
    status = run_config(config)
    if status != 0:
        raise SystemExit(status)


def entrypoint() -> None:
    """The console script: exit the process with :func:`main`'s status."""
    sys.exit(main())
