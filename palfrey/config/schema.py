"""The one place every Palfrey option is declared.

The CLI flags, the TOML keys, the ``PALFREY_*`` environment variables and the
configuration reference in ``docs/`` are all derived from the fields of
:class:`Config`, so an option cannot exist in one source and not in another.
Each field carries an :class:`Option` in its attrs metadata describing how it
is presented to users; the field's type, default and validator are the truth.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from palfrey.config.binds import TCPAddress, parse_bind
from palfrey.config.env_file import load_env_file
from palfrey.config.errors import ConfigError
from palfrey.observability.access_format import compile_format
from palfrey.protocols.fields import is_field_value, is_token, split_host_port

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")

#: Mozilla's "intermediate" TLS 1.2 suites (forward secrecy, AEAD only), in its order.
MODERN_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)


@attrs.frozen(slots=True)
class Option:
    """How one config field is shown to users (flag, help, value kind)."""

    help: str
    kind: str = "str"  # str | int | float | bool | list | path
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    negatable: bool = False  # bool flags that also get --no-<name>
    cli: bool = True  # False for options that only make sense from Python (e.g. an app object)
    group: str = "general"
    #: The release the option first appeared in, for the configuration reference.
    since: str = "0.1.0"


def _option(
    default: Any,
    help: str,
    *,
    kind: str = "str",
    choices: Sequence[str] | None = None,
    metavar: str | None = None,
    negatable: bool = False,
    validator: Callable[..., Any] | None = None,
    cli: bool = True,
    group: str = "general",
    since: str = "0.1.0",
) -> Any:
    validators = []
    if choices is not None:
        validators.append(_one_of(tuple(choices)))
    if validator is not None:
        validators.append(validator)
    option = Option(
        help=help,
        kind=kind,
        choices=tuple(choices) if choices is not None else None,
        metavar=metavar,
        negatable=negatable,
        cli=cli,
        group=group,
        since=since,
    )
    if isinstance(default, list):
        return attrs.field(
            factory=lambda: list(default),
            metadata={"option": option},
            validator=validators or None,
        )
    return attrs.field(default=default, metadata={"option": option}, validator=validators or None)


def _one_of(choices: tuple[Any, ...]) -> Callable[..., None]:
    """Like ``attrs.validators.in_``, but with a one-line message worded as the loader's.

    attrs' own exception carries a tuple as its arguments, so ``str()`` of it shows
    the tuple and the ``Attribute`` repr rather than a sentence.
    """

    def check(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            listed = ", ".join(str(choice) for choice in choices)
            raise ValueError(f"{attribute.name} must be one of {listed}, got {value!r}")

    return check


def _at_least(minimum: float, *, optional: bool = False) -> Callable[..., None]:
    def check(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{attribute.name} must be a number, got {value!r}")
        if isinstance(value, float) and math.isnan(value):
            raise ValueError(f"{attribute.name} must be a number, got NaN")
        if value < minimum:
            raise ValueError(f"{attribute.name} must be >= {minimum}, got {value!r}")

    return check


def _in_range(minimum: int, maximum: int) -> Callable[..., None]:
    at_least = _at_least(minimum)

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        at_least(instance, attribute, value)
        if value > maximum:
            raise ValueError(f"{attribute.name} must be <= {maximum}, got {value!r}")

    return check


def _port(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError(f"{attribute.name} must be an integer from 0 to 65535, got {value!r}")


def _headers(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    for item in value:
        if not isinstance(item, str) or ":" not in item:
            raise ValueError(f"{attribute.name} entries must look like 'name:value', got {item!r}")
        name, _, header_value = item.partition(":")
        try:
            name_bytes = name.strip().encode("latin-1")
            value_bytes = header_value.strip().encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"{attribute.name} entry {item!r} is not latin-1") from None
        if not is_token(name_bytes) or not is_field_value(value_bytes):
            raise ValueError(f"{attribute.name} entry {item!r} is not a valid header")


def _host_ports(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    for item in value:
        if not isinstance(item, str):
            raise TypeError(f"{attribute.name} entries must look like 'HOST:PORT', got {item!r}")
        try:
            split_host_port(item)
        except ValueError:
            raise ValueError(
                f"{attribute.name} entries must look like 'HOST:PORT', got {item!r}"
            ) from None


def _access_log_format(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"{attribute.name} must be a string, got {value!r}")
    try:
        compile_format(value)
    except ValueError as exc:
        raise ValueError(f"{attribute.name}: {exc}") from None


def _env_file(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Read (not yet apply) the file, so a missing or malformed one is a configuration
    error before anything starts, not an import failure in every worker."""
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"{attribute.name} must be a path, got {value!r}")
    try:
        load_env_file(value)
    except ConfigError as exc:
        # Drop load_env_file's "env file " (kept for its other caller, the importer):
        # after the option's own label it would name the option twice.
        reason = str(exc).removeprefix("env file ")
        raise ValueError(f"{attribute.name} {reason}") from None


def _existing_file(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"{attribute.name} must be a path, got {value!r}")
    if not os.path.isfile(value):
        raise ValueError(f"{attribute.name} file {value!r} does not exist")


def _metrics_bind(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"{attribute.name} must look like 'HOST:PORT', got {value!r}")
    try:
        is_tcp = isinstance(parse_bind(value), TCPAddress)
    except ValueError:
        is_tcp = False
    if not is_tcp:
        raise ValueError(f"{attribute.name} must look like 'HOST:PORT', got {value!r}")


def _bind_addresses(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    for item in value:
        if not isinstance(item, str):
            raise TypeError(f"{attribute.name} entries must be strings, got {item!r}")
        try:
            parse_bind(item)
        except ValueError as exc:
            raise ValueError(f"{attribute.name} entry {item!r}: {exc}") from None


def _octal_mode(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    try:
        mode = int(value, 8)
    except (TypeError, ValueError):
        raise ValueError(
            f"{attribute.name} must be octal file permissions such as 660, got {value!r}"
        ) from None
    if not 0 <= mode <= 0o777:
        raise ValueError(f"{attribute.name} must be between 000 and 777, got {value!r}")


@attrs.define(slots=True, kw_only=True)
class Config:
    """Every option Palfrey understands, with its default and validation.

    Field names are the TOML keys; ``--`` plus the name with dashes is the flag;
    ``PALFREY_`` plus the upper-cased name is the environment variable.
    """

    app: Any = _option(  # noqa: RUF009 - _option returns an attrs.field
        None,
        "The application as 'module:attribute' (or an ASGI/WSGI callable from Python).",
        metavar="APP",
        group="application",
    )
    factory: bool = _option(
        False,
        "Treat APP as a factory: call it with no arguments to get the application.",
        kind="bool",
        negatable=True,
        group="application",
    )
    app_dir: str = _option(
        ".",
        "Directory prepended to sys.path before importing APP.",
        kind="path",
        group="application",
    )
    interface: str = _option(
        "auto",
        "Application interface; 'auto' detects ASGI3, ASGI2 or WSGI.",
        choices=("auto", "asgi3", "asgi2", "wsgi"),
        group="application",
    )
    env_file: str | None = _option(
        None,
        "A .env file whose variables are loaded into the environment before the app is imported.",
        kind="path",
        validator=_env_file,
        group="application",
    )
    loop: str = _option(
        "trio",
        "Event loop the application is written for; 'asyncio' runs it under trio-asyncio"
        " (pip install 'palfrey[asyncio]').",
        choices=("trio", "asyncio"),
        group="application",
    )
    wsgi_threads: int = _option(
        40,
        "Worker threads for a WSGI application: the most WSGI requests running at once.",
        kind="int",
        validator=_at_least(1),
        group="application",
    )

    host: str = _option("127.0.0.1", "Bind socket to this host.", group="socket")
    port: int = _option(
        8000,
        "Bind socket to this port (0 picks a free port).",
        kind="int",
        validator=_port,
        group="socket",
    )
    uds: str | None = _option(
        None, "Bind to a UNIX domain socket at this path.", kind="path", group="socket"
    )
    fd: int | None = _option(
        None,
        "Serve on an already-bound socket with this file descriptor.",
        kind="int",
        validator=_at_least(0, optional=True),
        group="socket",
    )
    bind: list[str] = _option(  # noqa: RUF009 - _option returns an attrs.field
        [],
        "Also listen on ADDR: 'HOST:PORT', '[V6]:PORT', 'unix:PATH' or 'fd://N'; repeat for"
        " several. With --bind, --host/--port are bound only when given explicitly.",
        kind="list",
        metavar="ADDR",
        validator=_bind_addresses,
        group="socket",
    )
    uds_mode: str = _option(
        "666",
        "File permissions of the --uds socket file, in octal.",
        metavar="OCTAL",
        validator=_octal_mode,
        group="socket",
    )
    backlog: int = _option(
        2048,
        "Maximum number of pending connections in the listen queue.",
        kind="int",
        validator=_at_least(1),
        group="socket",
    )

    http: str = _option(
        "auto",
        "Protocols: 'auto' serves HTTP/1.1 (httptools when installed, else h11)"
        " and HTTP/2 on TCP; 'h11' or 'httptools' HTTP/1.1 only; 'h2' HTTP/2 only;"
        " 'h3' HTTP/3 only, over UDP on --host/--port (needs --ssl-certfile and --ssl-keyfile).",
        choices=("auto", "h11", "httptools", "h2", "h3"),
        group="protocol",
    )
    quic_bind: list[str] = _option(  # noqa: RUF009 - _option returns an attrs.field
        [],
        "Also serve HTTP/3 over UDP on HOST:PORT (repeat for several; needs --ssl-certfile"
        " and --ssl-keyfile); TCP responses then advertise it with alt-svc.",
        kind="list",
        metavar="HOST:PORT",
        validator=_host_ports,
        group="protocol",
    )
    h2_max_concurrent_streams: int = _option(
        100,
        "HTTP/2 streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS);"
        " also the HTTP/3 request streams (initial_max_streams_bidi).",
        kind="int",
        validator=_at_least(1),
        group="protocol",
    )
    h2_max_header_list_size: int = _option(
        65536,
        "Largest HTTP/2 request header list in bytes (SETTINGS_MAX_HEADER_LIST_SIZE);"
        " larger lists get 431.",
        kind="int",
        validator=_at_least(1024),
        group="protocol",
    )
    h2_max_inbound_frame_size: int = _option(
        16384,
        "Largest HTTP/2 frame payload a client may send (SETTINGS_MAX_FRAME_SIZE).",
        kind="int",
        validator=_in_range(16384, 2**24 - 1),
        group="protocol",
    )
    h3_max_connections: int = _option(
        4096,
        "HTTP/3 connections one UDP address keeps at once; new connections beyond it are"
        " turned away (their Initial packets are dropped).",
        kind="int",
        validator=_at_least(1),
        group="protocol",
    )
    h3_receive_window: int = _option(
        1024 * 1024,
        "Request body bytes one HTTP/3 stream may send ahead of what the app has read"
        " (its QUIC flow-control window; a connection's is four times it).",
        kind="int",
        validator=_in_range(16384, 2**30),
        group="protocol",
    )
    h11_max_incomplete_event_size: int = _option(
        16 * 1024,
        "Largest request head (request line and headers) in bytes; larger heads get 431.",
        kind="int",
        validator=_at_least(1024),
        group="protocol",
    )
    limit_request_target: int = _option(
        8190,
        "Longest HTTP/1.1 request-target (path and query) in bytes, apart from the head"
        " size; longer ones get 414.",
        kind="int",
        validator=_at_least(256),
        group="protocol",
    )
    limit_request_body: int | None = _option(
        None,
        "Largest request body in bytes; larger bodies get 413. Off by default.",
        kind="int",
        validator=_at_least(0, optional=True),
        group="protocol",
    )
    root_path: str = _option(
        "", "ASGI root_path for apps mounted below a URL prefix.", group="protocol"
    )
    proxy_headers: bool = _option(
        True,
        "Trust Forwarded and X-Forwarded-For/-Proto/-Host/-Port from"
        " --forwarded-allow-ips to set client, scheme and host.",
        kind="bool",
        negatable=True,
        group="protocol",
    )
    forwarded_allow_ips: str | None = _option(
        None,
        "Comma-separated IPs/networks trusted for proxy headers, 'unix' for"
        " UNIX socket peers, or '*' for all; unset means $FORWARDED_ALLOW_IPS,"
        " else '127.0.0.1,::1'.",
        group="protocol",
    )
    server_header: bool = _option(
        True,
        "Send a 'server: palfrey' response header.",
        kind="bool",
        negatable=True,
        group="protocol",
    )
    date_header: bool = _option(
        True, "Send a 'date' response header.", kind="bool", negatable=True, group="protocol"
    )
    header: list[str] = _option(  # noqa: RUF009 - _option returns an attrs.field
        [],
        "Extra response header 'name:value'; repeat the flag for several.",
        kind="list",
        metavar="NAME:VALUE",
        validator=_headers,
        group="protocol",
    )

    ws: str = _option(
        "auto",
        "WebSocket implementation; 'none' serves upgrade requests as plain HTTP.",
        choices=("auto", "none", "wsproto"),
        group="websocket",
    )
    ws_max_size: int = _option(
        16 * 1024 * 1024,
        "Largest WebSocket message in bytes (close 1009).",
        kind="int",
        validator=_at_least(1),
        group="websocket",
    )
    ws_max_queue: int = _option(
        32,
        "Inbound WebSocket messages buffered before reading pauses.",
        kind="int",
        validator=_at_least(1),
        group="websocket",
    )
    ws_ping_interval: float | None = _option(
        20.0,
        "Seconds between server pings; 0 disables.",
        kind="float",
        validator=_at_least(0, optional=True),
        group="websocket",
    )
    ws_ping_timeout: float | None = _option(
        20.0,
        "Seconds to wait for a pong before closing with 1011.",
        kind="float",
        validator=_at_least(0, optional=True),
        group="websocket",
    )
    ws_per_message_deflate: bool = _option(
        True,
        "Negotiate permessage-deflate (RFC 7692).",
        kind="bool",
        negatable=True,
        group="websocket",
    )

    lifespan: str = _option(
        "auto",
        "Lifespan protocol: 'on' requires it, 'auto' uses it if the app supports it.",
        choices=("auto", "on", "off"),
        group="lifespan",
    )
    timeout_lifespan: float = _option(
        60.0,
        "Seconds allowed for lifespan startup and for lifespan shutdown.",
        kind="float",
        validator=_at_least(0),
        group="lifespan",
    )

    limit_concurrency: int | None = _option(
        None,
        "Most requests served at once; above it new requests get 503.",
        kind="int",
        validator=_at_least(1, optional=True),
        group="limits",
    )
    limit_connections: int | None = _option(
        None,
        "Most connections open at once; at the cap accepting pauses and new clients"
        " wait in the listen backlog.",
        kind="int",
        validator=_at_least(1, optional=True),
        group="limits",
    )
    limit_max_requests: int | None = _option(
        None,
        "Shut down gracefully after this many requests.",
        kind="int",
        validator=_at_least(1, optional=True),
        group="limits",
    )
    limit_max_requests_jitter: int = _option(
        0,
        "Random extra requests (0..N) added to --limit-max-requests.",
        kind="int",
        validator=_at_least(0),
        group="limits",
    )

    timeout_keep_alive: float = _option(
        5.0,
        "Close idle keep-alive connections after this many seconds.",
        kind="float",
        validator=_at_least(0),
        group="timeouts",
    )
    timeout_request_header: float = _option(
        10.0,
        "Seconds allowed to receive a complete request head (408 if partial).",
        kind="float",
        validator=_at_least(0),
        group="timeouts",
    )
    timeout_request_body: float = _option(
        60.0,
        "Seconds one read of a request body may wait for the client to send more "
        "(408 before the response started, otherwise the connection is closed).",
        kind="float",
        validator=_at_least(0),
        group="timeouts",
    )
    timeout_send: float = _option(
        60.0,
        "Seconds one write may wait for the client to read (the connection is then closed).",
        kind="float",
        validator=_at_least(0),
        group="timeouts",
    )
    timeout_graceful_shutdown: float = _option(
        30.0,
        "Seconds in-flight requests get to finish on shutdown before they are cancelled.",
        kind="float",
        validator=_at_least(0),
        group="timeouts",
    )
    timeout_tls_handshake: float = _option(
        10.0,
        "Seconds allowed for a TLS handshake.",
        kind="float",
        validator=_at_least(0),
        group="timeouts",
    )

    # The TLS files are checked for existence here, like --log-config, so a missing one
    # is a configuration error --check-config reports; reading them stays at startup.
    ssl_certfile: str | None = _option(
        None,
        "TLS certificate file (PEM).",
        kind="path",
        validator=_existing_file,
        group="tls",
    )
    ssl_keyfile: str | None = _option(
        None,
        "TLS private key file (PEM).",
        kind="path",
        validator=_existing_file,
        group="tls",
    )
    ssl_keyfile_password: str | None = _option(
        None, "Password for the TLS private key.", group="tls"
    )
    ssl_ca_certs: str | None = _option(
        None,
        "CA certificates file for client verification.",
        kind="path",
        validator=_existing_file,
        group="tls",
    )
    ssl_cert_reqs: int = _option(
        0,
        "Client certificate requirement (0 none, 1 optional, 2 required).",
        kind="int",
        choices=None,
        validator=_one_of((0, 1, 2)),
        group="tls",
    )
    ssl_ciphers: str = _option(
        MODERN_CIPHERS,
        "TLS 1.2 cipher suites (OpenSSL cipher list); TLS 1.3 suites are OpenSSL's own."
        " The default is Mozilla's 'intermediate' list: ECDHE with AES-GCM or ChaCha20.",
        group="tls",
    )

    set_options: frozenset[str] = attrs.field(
        factory=frozenset,
        converter=frozenset,
        metadata={
            "option": Option(
                help="Names of the options a source set explicitly (filled in by the loader).",
                cli=False,
                group="processes",
            )
        },
    )
    workers: int | None = _option(
        None,
        "Worker processes, each serving every socket; unset means $WEB_CONCURRENCY, else 1.",
        kind="int",
        validator=_at_least(1, optional=True),
        group="processes",
    )
    timeout_worker_healthcheck: float = _option(
        5.0,
        "Seconds a worker's event loop may take to answer the supervisor's ping before the"
        " worker is killed and replaced.",
        kind="float",
        validator=_at_least(0.1),
        group="processes",
    )
    workers_lifetime: float | None = _option(
        None,
        "Replace each worker, gracefully and one at a time, after this many seconds.",
        kind="float",
        validator=_at_least(1, optional=True),
        group="processes",
    )
    workers_max_rss: int | None = _option(
        None,
        "Replace a worker, gracefully, once its resident memory passes this many MiB.",
        kind="int",
        validator=_at_least(1, optional=True),
        group="processes",
    )
    reload: bool = _option(
        False,
        "Restart the server when source files change (pip install 'palfrey[reload]').",
        kind="bool",
        group="processes",
    )
    reload_dir: list[str] = _option(  # noqa: RUF009 - _option returns an attrs.field
        [],
        "Directory to watch with --reload (repeat for several; default: --app-dir).",
        kind="list",
        metavar="PATH",
        group="processes",
    )
    reload_include: list[str] = _option(  # noqa: RUF009 - _option returns an attrs.field
        [],
        "Glob of file names whose changes trigger a reload (repeat for several; default: *.py).",
        kind="list",
        metavar="GLOB",
        group="processes",
    )
    reload_exclude: list[str] = _option(  # noqa: RUF009 - _option returns an attrs.field
        [],
        "Glob of file names or directories --reload ignores (repeat for several;"
        " watchfiles' defaults such as .git, .venv, __pycache__ and *.py[cod] always are).",
        kind="list",
        metavar="GLOB",
        group="processes",
    )
    reload_delay: float = _option(
        0.25,
        "Seconds to wait after a change before reloading, so a burst of saves reloads once.",
        kind="float",
        validator=_at_least(0),
        group="processes",
    )
    pid: str | None = _option(
        None,
        "Write the main process's pid to this file (removed on exit).",
        kind="path",
        group="processes",
    )
    check_config: bool = _option(
        False,
        "Validate the configuration, print every setting with its source and exit"
        " (status 0 when valid, 2 when not) without starting or importing the app.",
        kind="bool",
        group="processes",
    )
    check_app: bool = _option(
        False,
        "With --check-config, also import the application to check that it loads.",
        kind="bool",
        group="processes",
    )

    log_level: str = _option("info", "Log level.", choices=LOG_LEVELS, group="logging")
    access_log: bool = _option(
        True,
        "Log one line per request on the 'palfrey.access' logger.",
        kind="bool",
        negatable=True,
        group="logging",
    )
    access_log_format: str | None = _option(
        None,
        "Access log line in gunicorn atoms, e.g. '%(h)s \"%(r)s\" %(s)s %(b)s %(D)s'"
        "; unset, Palfrey's own line.",
        metavar="FORMAT",
        validator=_access_log_format,
        group="logging",
    )
    log_format: str = _option(
        "text",
        "Log lines as text, or as one JSON object per line for the error and access logs.",
        choices=("text", "json"),
        group="logging",
    )
    log_config: str | None = _option(
        None,
        "Logging configuration file (dictConfig as .json or .yaml, or a fileConfig .ini);"
        " it replaces Palfrey's own logging set-up.",
        kind="path",
        validator=_existing_file,
        group="logging",
    )
    metrics_bind: str | None = _option(
        None,
        "Serve /metrics (Prometheus), /healthz and /readyz on this separate HOST:PORT.",
        metavar="HOST:PORT",
        validator=_metrics_bind,
        group="observability",
    )

    def __attrs_post_init__(self) -> None:
        """Checks that involve more than one option."""
        if self.reload and self.workers is not None and self.workers > 1:
            raise ValueError(
                "reload and workers > 1 cannot be combined: reload runs one serving process"
            )
        if (self.reload or self.worker_count > 1) and not (
            self.app is None or isinstance(self.app, str)
        ):
            raise ValueError(
                "reload and workers need the application as an import string"
                " ('module:attribute'), because each process imports it afresh"
            )
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("ssl_keyfile is set without ssl_certfile; TLS needs the certificate")
        if self.serves_http3:
            # QUIC always runs TLS 1.3 (RFC 9001): there is no HTTP/3 without a certificate.
            what = "http = 'h3'" if self.http == "h3" else "quic_bind"
            if self.ssl_certfile is None or self.ssl_keyfile is None:
                raise ValueError(
                    f"{what} needs ssl_certfile and ssl_keyfile (QUIC always uses TLS)"
                )
            if self.http == "h3" and self.uds is not None:
                raise ValueError("http = 'h3' serves UDP on host and port; it cannot use uds")
            if self.http == "h3" and self.fd is not None:
                raise ValueError("http = 'h3' serves UDP on host and port; it cannot use fd")

    @property
    def worker_count(self) -> int:
        """``--workers``, else ``$WEB_CONCURRENCY`` (the Heroku/Uvicorn convention), else 1.

        ``--reload`` runs one serving process whatever ``$WEB_CONCURRENCY`` says.
        """
        if self.workers is not None:
            return self.workers
        if self.reload:
            return 1
        text = os.environ.get("WEB_CONCURRENCY", "")
        return int(text) if text.isdigit() and int(text) > 0 else 1

    @property
    def trusted_proxies(self) -> str:
        """``--forwarded-allow-ips``, else ``$FORWARDED_ALLOW_IPS``, else ``127.0.0.1,::1``.

        Uvicorn's order and default, so that a deployment moving over keeps
        trusting the proxies it trusted: the local proxy on either loopback
        address, or whatever the environment names. ``PALFREY_FORWARDED_ALLOW_IPS``
        sets the option itself, so it wins over ``$FORWARDED_ALLOW_IPS``.
        """
        if self.forwarded_allow_ips is not None:
            return self.forwarded_allow_ips
        return os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

    @property
    def uses_supervisor(self) -> bool:
        """Whether serving needs a supervising process rather than serving in this one."""
        return (
            self.reload
            or self.worker_count > 1
            or self.workers_lifetime is not None
            or self.workers_max_rss is not None
        )

    @property
    def serves_http3(self) -> bool:
        """HTTP/3 is served, alone (``--http h3``) or beside TCP (``--quic-bind``)."""
        return self.http == "h3" or bool(self.quic_bind)

    @property
    def is_ssl(self) -> bool:
        return self.ssl_certfile is not None

    def extra_headers(self) -> list[tuple[bytes, bytes]]:
        """The ``--header`` values as lower-cased byte pairs, in the given order."""
        pairs = []
        for item in self.header:
            name, value = item.split(":", 1)
            pairs.append((name.strip().lower().encode("latin-1"), value.strip().encode("latin-1")))
        return pairs


def options() -> list[tuple[attrs.Attribute[Any], Option]]:
    """Every field of :class:`Config` with its presentation metadata, in declaration order."""
    return [(field, field.metadata["option"]) for field in attrs.fields(Config)]
