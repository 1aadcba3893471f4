"""Fast unit tests for the pieces behind --bind, socket activation, --reload and the supervisor."""

from __future__ import annotations

import logging
import os
import socket
import threading

import pytest
import trio
import trio.testing
import watchfiles

from palfrey.config.binds import InheritedSocket, TCPAddress, UnixAddress, parse_bind
from palfrey.config.schema import Config
from palfrey.supervisor import supervisor as supervisor_module
from palfrey.supervisor.control import encode_config, receive_config
from palfrey.supervisor.reload import ReloadFilter, watched_directories
from palfrey.supervisor.supervisor import Supervisor
from palfrey.supervisor.workers import WorkerState
from palfrey.transport.listeners import bind_addresses, systemd_sockets


async def asgi_app(scope, receive, send):  # an application object, not an import string
    pass


def make_config(**options) -> Config:
    """A Config as the loader builds it: every given option counts as explicitly set."""
    options.setdefault("app", "module:app")
    return Config(**options, set_options=frozenset(options) - {"app"})


# --- parse_bind ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8000", TCPAddress("127.0.0.1", 8000)),
        ("0.0.0.0:0", TCPAddress("0.0.0.0", 0)),
        ("localhost:65535", TCPAddress("localhost", 65535)),
        ("[::1]:9000", TCPAddress("::1", 9000)),
        ("[::]:80", TCPAddress("::", 80)),
        ("unix:/run/app.sock", UnixAddress("/run/app.sock")),
        ("unix:relative.sock", UnixAddress("relative.sock")),
        ("fd://3", InheritedSocket(3)),
        ("fd://0", InheritedSocket(0)),
        ("fd://12", InheritedSocket(12)),
    ],
)
def test_parse_bind_accepts(text: str, expected: object) -> None:
    assert parse_bind(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope", "expected HOST:PORT, [V6]:PORT, unix:PATH or fd://N"),
        ("", "expected HOST:PORT"),
        ("127.0.0.1", "expected HOST:PORT"),
        ("127.0.0.1:", "expected HOST:PORT"),
        (":8000", "expected HOST:PORT"),
        ("127.0.0.1:http", "expected HOST:PORT"),
        ("127.0.0.1:-1", "expected HOST:PORT"),
        ("127.0.0.1:65536", "expected HOST:PORT"),
        ("[::1]", "expected HOST:PORT"),
        ("unix:", "expected a path after 'unix:'"),
        ("fd://", "expected a file descriptor number after 'fd://'"),
        ("fd://three", "expected a file descriptor number after 'fd://'"),
        ("fd://-1", "expected a file descriptor number after 'fd://'"),
        ("fd://3 ", "expected a file descriptor number after 'fd://'"),
    ],
)
def test_parse_bind_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_bind(text)


# --- bind_addresses -----------------------------------------------------------------------


def test_nothing_named_binds_host_and_port() -> None:
    assert bind_addresses(Config(app="m:a"), {}) == [TCPAddress("127.0.0.1", 8000)]


def test_explicit_host_and_port_alone() -> None:
    config = make_config(host="0.0.0.0", port=9000)
    assert bind_addresses(config, {}) == [TCPAddress("0.0.0.0", 9000)]


def test_uds_alone_opens_no_tcp_socket() -> None:
    assert bind_addresses(make_config(uds="/tmp/a.sock"), {}) == [UnixAddress("/tmp/a.sock")]


def test_fd_alone_opens_no_tcp_socket() -> None:
    assert bind_addresses(make_config(fd=7), {}) == [InheritedSocket(7)]


def test_bind_alone_opens_no_default_tcp_socket() -> None:
    config = make_config(bind=["unix:/tmp/b.sock"])
    assert bind_addresses(config, {}) == [UnixAddress("/tmp/b.sock")]


def test_uds_with_explicit_port_binds_both() -> None:
    config = make_config(uds="/tmp/a.sock", port=9000)
    assert bind_addresses(config, {}) == [TCPAddress("127.0.0.1", 9000), UnixAddress("/tmp/a.sock")]


def test_uds_with_explicit_host_binds_both_on_the_default_port() -> None:
    config = make_config(uds="/tmp/a.sock", host="::1")
    assert bind_addresses(config, {}) == [TCPAddress("::1", 8000), UnixAddress("/tmp/a.sock")]


def test_default_valued_port_not_marked_as_set_does_not_bind() -> None:
    # What matters is whether a source set the option, not whether its value differs.
    config = Config(app="m:a", uds="/tmp/a.sock", port=8000, set_options={"uds"})
    assert bind_addresses(config, {}) == [UnixAddress("/tmp/a.sock")]


def test_every_source_in_banner_order() -> None:
    config = make_config(
        fd=5,
        uds="/tmp/a.sock",
        bind=["fd://6", "[::1]:9001", "unix:/tmp/b.sock", "127.0.0.1:9000"],
        port=0,
    )
    environ = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2"}
    assert bind_addresses(config, environ) == [
        TCPAddress("127.0.0.1", 0),
        InheritedSocket(5),
        UnixAddress("/tmp/a.sock"),
        InheritedSocket(6),
        TCPAddress("::1", 9001),
        UnixAddress("/tmp/b.sock"),
        TCPAddress("127.0.0.1", 9000),
        InheritedSocket(3),
        InheritedSocket(4),
    ]


def test_bind_list_order_is_kept() -> None:
    binds = ["127.0.0.1:9002", "unix:/tmp/z.sock", "127.0.0.1:9001", "unix:/tmp/a.sock"]
    assert bind_addresses(make_config(bind=binds), {}) == [parse_bind(text) for text in binds]


def test_systemd_sockets_alone_open_no_tcp_socket() -> None:
    environ = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1"}
    assert bind_addresses(Config(app="m:a"), environ) == [InheritedSocket(3)]


# --- systemd_sockets ----------------------------------------------------------------------


def test_systemd_sockets_for_this_process() -> None:
    environ = {
        "LISTEN_PID": str(os.getpid()),
        "LISTEN_FDS": "3",
        "LISTEN_FDNAMES": "http:https:admin",
        "PATH": "/usr/bin",
    }
    assert systemd_sockets(environ) == [3, 4, 5]
    assert environ == {"PATH": "/usr/bin"}


def test_systemd_sockets_zero_fds() -> None:
    environ = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "0"}
    assert systemd_sockets(environ) == []


def test_systemd_sockets_meant_for_another_process() -> None:
    environ = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b"}
    before = dict(environ)
    assert systemd_sockets(environ) == []
    assert environ == before


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"LISTEN_FDS": "1"},
        {"LISTEN_PID": "PID"},
        {"LISTEN_PID": "PID", "LISTEN_FDS": ""},
        {"LISTEN_PID": "PID", "LISTEN_FDS": "two"},
        {"LISTEN_PID": "PID", "LISTEN_FDS": "-1"},
        {"LISTEN_PID": "", "LISTEN_FDS": "1"},
        {"LISTEN_PID": "not-a-pid", "LISTEN_FDS": "1"},
    ],
)
def test_systemd_sockets_ignores_incomplete_variables(environ: dict[str, str]) -> None:
    environ = {name: value.replace("PID", str(os.getpid())) for name, value in environ.items()}
    assert systemd_sockets(environ) == []


# --- ReloadFilter -------------------------------------------------------------------------


MODIFIED = watchfiles.Change.modified


@pytest.mark.parametrize(
    ("path", "watched"),
    [
        ("/src/app.py", True),
        ("/src/pkg/sub/module.py", True),
        ("/src/README.md", False),
        ("/src/templates/index.html", False),
        ("/src/app.pyc", False),
        ("/src/__pycache__/app.cpython-311.py", False),
        ("/src/.git/hooks/pre-commit.py", False),
        ("/src/.venv/lib/site.py", False),
        ("/src/.tox/py311/x.py", False),
        ("/src/.mypy_cache/x.py", False),
        ("/src/node_modules/x.py", False),
        ("/src/.#app.py", False),  # emacs lock file
        ("/src/app.py~", False),  # editor backup
        ("/src/.app.py.swp", False),  # vim swap file
    ],
)
def test_reload_filter_defaults(path: str, watched: bool) -> None:
    assert ReloadFilter([], [])(MODIFIED, path) is watched


def test_reload_filter_applies_to_every_kind_of_change() -> None:
    watch = ReloadFilter([], [])
    for change in watchfiles.Change:
        assert watch(change, "/src/app.py")
        assert not watch(change, "/src/notes.txt")


def test_reload_filter_include_replaces_the_default() -> None:
    watch = ReloadFilter(["*.html", "*.toml"], [])
    assert watch(MODIFIED, "/src/templates/index.html")
    assert watch(MODIFIED, "/src/settings.toml")
    assert not watch(MODIFIED, "/src/app.py")
    # The watchfiles defaults still apply to included names.
    assert not watch(MODIFIED, "/src/.git/index.html")


def test_reload_filter_exclude_matches_names_and_directories() -> None:
    watch = ReloadFilter([], ["test_*.py", "migrations", "generated*"])
    assert watch(MODIFIED, "/src/app.py")
    assert not watch(MODIFIED, "/src/test_app.py")
    assert not watch(MODIFIED, "/src/migrations/0001_initial.py")
    assert not watch(MODIFIED, "/src/generated_code/models.py")
    assert not watch(MODIFIED, "/src/generated.py")
    assert watch(MODIFIED, "/src/app_test.py")


def test_reload_filter_exclude_wins_over_include() -> None:
    watch = ReloadFilter(["*.py", "*.cfg"], ["local.cfg"])
    assert watch(MODIFIED, "/src/app.cfg")
    assert not watch(MODIFIED, "/src/local.cfg")


def test_watched_directories(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert watched_directories(Config(app="m:a")) == [str(tmp_path)]
    assert watched_directories(Config(app="m:a", app_dir="src")) == [str(tmp_path / "src")]
    config = Config(app="m:a", app_dir="src", reload_dir=["a", "/abs/b"])
    assert watched_directories(config) == [str(tmp_path / "a"), "/abs/b"]


# --- control channel ----------------------------------------------------------------------


def sample_config() -> Config:
    return Config(
        app="pkg.main:app",
        app_dir="/srv/app",
        port=0,
        uds="/run/app.sock",
        bind=["unix:/run/b.sock", "[::1]:9000", "fd://3"],
        header=["x-one:1", "x-two: 2, 3"],
        ws_ping_interval=None,
        timeout_keep_alive=2.5,
        limit_max_requests=100,
        ssl_keyfile_password='p\u00e4ss "word"',
        reload=True,
        reload_exclude=["*.tmp"],
        set_options={"port", "uds", "bind", "header", "reload"},
    )


def test_config_round_trip_over_a_socketpair() -> None:
    config = sample_config()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.sendall(encode_config(config))
        received = receive_config(theirs)
    assert received == config
    assert received.set_options == frozenset({"port", "uds", "bind", "header", "reload"})
    assert isinstance(received.set_options, frozenset)


def test_config_round_trip_arriving_in_pieces() -> None:
    message = encode_config(sample_config())
    ours, theirs = socket.socketpair()

    def send_slowly() -> None:
        for start in range(0, len(message), 7):
            ours.sendall(message[start : start + 7])

    with ours, theirs:
        sender = threading.Thread(target=send_slowly)
        sender.start()
        try:
            theirs.settimeout(10)
            received = receive_config(theirs)
        finally:
            sender.join(10)
    assert received == sample_config()


def test_two_configs_back_to_back_are_read_one_at_a_time() -> None:
    first, second = Config(app="a:b", port=1), Config(app="c:d", port=2)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.sendall(encode_config(first) + encode_config(second) + b"p")
        assert receive_config(theirs) == first
        assert receive_config(theirs) == second
        assert theirs.recv(10) == b"p"


@pytest.mark.parametrize("cut", [0, 2, 4, 10])
def test_receive_config_from_a_closed_channel(cut: int) -> None:
    message = encode_config(Config(app="a:b"))
    ours, theirs = socket.socketpair()
    with theirs:
        ours.sendall(message[:cut])
        ours.close()
        with pytest.raises(EOFError):
            receive_config(theirs)


# --- Config validation --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["9", "8", "1000", "abc", "", "-1", "0o777x"])
def test_uds_mode_must_be_octal_permissions(mode: str) -> None:
    with pytest.raises(ValueError, match="uds_mode"):
        Config(app="m:a", uds_mode=mode)


@pytest.mark.parametrize("mode", ["666", "600", "0660", "777", "000", "0o600"])
def test_uds_mode_accepts_octal(mode: str) -> None:
    assert Config(app="m:a", uds_mode=mode).uds_mode == mode


def test_bad_bind_names_the_value() -> None:
    with pytest.raises(ValueError, match="bind entry 'nope'"):
        Config(app="m:a", bind=["127.0.0.1:8000", "nope"])


def test_bind_entries_must_be_strings() -> None:
    with pytest.raises(TypeError, match="bind entries must be strings"):
        Config(app="m:a", bind=[8000])


def test_reload_with_several_workers_is_rejected() -> None:
    with pytest.raises(ValueError, match="reload and workers > 1"):
        Config(app="m:a", reload=True, workers=2)


def test_reload_with_one_worker_is_fine() -> None:
    config = Config(app="m:a", reload=True, workers=1)
    assert config.worker_count == 1
    assert config.uses_supervisor


def test_reload_ignores_web_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    assert Config(app="m:a", reload=True).worker_count == 1


@pytest.mark.parametrize("options", [{"workers": 2}, {"reload": True}])
def test_workers_and_reload_need_an_import_string(options: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="import string"):
        Config(app=asgi_app, **options)


def test_web_concurrency_with_an_app_object_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    with pytest.raises(ValueError, match="import string"):
        Config(app=asgi_app)


def test_one_worker_with_an_app_object_is_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    config = Config(app=asgi_app, workers=1)
    assert not config.uses_supervisor


def test_several_workers_with_an_import_string() -> None:
    config = Config(app="m:a", workers=3)
    assert config.worker_count == 3
    assert config.uses_supervisor


# --- start-up deadline ----------------------------------------------------------------------


def test_a_worker_that_never_starts_is_killed_with_the_limit_named(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The log line says how long the worker had: --timeout-lifespan plus the import margin."""

    class StuckWorker:
        pid = 4242
        state = WorkerState.STARTING

        def __init__(self) -> None:
            self.settled = trio.Event()
            self.exited = trio.Event()

        def kill(self) -> None:
            self.state = WorkerState.EXITED
            self.exited.set()

    async def spawn(*_args: object) -> StuckWorker:
        return StuckWorker()

    async def watch(_self: Supervisor, worker: StuckWorker) -> None:
        await worker.exited.wait()

    monkeypatch.setattr(supervisor_module, "spawn_worker", spawn)
    monkeypatch.setattr(Supervisor, "_watch_worker", watch)
    config = Config(app="m:a", timeout_lifespan=1.5)
    supervisor = Supervisor(config, config, [])

    async def main() -> float:
        async with trio.open_nursery() as nursery:
            supervisor.workers_nursery = nursery
            started = trio.current_time()
            worker = await supervisor.start_worker(lambda: None)
        assert worker.state is WorkerState.EXITED
        return trio.current_time() - started

    with caplog.at_level(logging.ERROR, logger="palfrey.error"):
        waited = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert waited == pytest.approx(1.5 + supervisor_module.START_MARGIN)
    assert "Worker [4242] did not start within 31.5s; killing it" in caplog.messages
