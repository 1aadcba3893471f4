"""HTTP/3 over QUIC on trio UDP sockets: one endpoint task per address, one task per connection.

A :class:`QuicEndpoint` reads datagrams from its socket and routes each to
its connection by destination connection id (aioquic's header parsing), as
aioquic's asyncio server does: a packet of a version this server does not
speak gets a Version Negotiation packet (RFC 9000 §6) if its datagram is at
least 1200 bytes (smaller ones are dropped, §5.2.2, so a spoofed source gets
no amplification), a new connection is made only for an Initial packet in a
datagram of at least 1200 bytes (RFC 9000 §14.1, which also keeps the
anti-amplification limit meaningful) while the endpoint has fewer than
``--h3-max-connections`` connections and :data:`MAX_HANDSHAKES` handshakes,
and anything unparsable is dropped. Nothing a datagram carries can raise out
of the endpoint task.

Each connection is a :class:`QuicConnectionTask` in the server's connection
nursery, with its own error boundary: it takes datagrams from a bounded
queue (:data:`MAX_QUEUED_DATAGRAMS`; beyond it datagrams are dropped, as a
full socket buffer would, so one slow connection never stalls the endpoint),
feeds its sans-I/O :class:`~palfrey.protocols.h3.H3Protocol`, runs each
request stream's app in its own nursery through
:func:`~palfrey.transport.multiplexed.serve_stream`, and sends what the protocol
queues. aioquic's timer is the deadline of the one cancel scope the task
waits in (no task per timer). Sends go straight to the non-blocking socket
and a datagram the kernel cannot take is dropped: QUIC's loss recovery sends
it again, and the endpoint's read loop is never held up.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
from collections import deque
from typing import TYPE_CHECKING, Any

import trio
from aioquic.buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_version_negotiation,
    pull_quic_header,
)

from palfrey.protocols.events import (
    ConnectionTerminated,
    RequestReceived,
    StreamData,
    StreamEnded,
    StreamReset,
)
from palfrey.protocols.fields import split_host_port
from palfrey.protocols.h3 import ConnectionIdIssued, ConnectionIdRetired, ErrorCode, H3Protocol
from palfrey.transport.errors import BindError, TLSSetupError
from palfrey.transport.h3_stream import H3Stream
from palfrey.transport.multiplexed import serve_stream
from palfrey.transport.state import ConnectionControl
from palfrey.transport.streams import connection_app
from palfrey.transport.tls import server_certificate_pem

if TYPE_CHECKING:
    from palfrey.asgi.scope import Address
    from palfrey.config.schema import Config
    from palfrey.transport.state import ServerState

logger = logging.getLogger("palfrey.error")

#: Larger than any datagram a QUIC peer may send on a path (RFC 9000 §14).
RECEIVE_SIZE = 65536
#: Datagrams waiting for one connection's task; more are dropped.
MAX_QUEUED_DATAGRAMS = 256
#: Connections still in their handshake at once (state a spoofed source can make us keep);
#: Initial packets beyond it are dropped. All connections together: ``--h3-max-connections``.
MAX_HANDSHAKES = 256
#: The smallest datagram that may carry a client's first Initial (RFC 9000 §14.1).
MIN_INITIAL_SIZE = 1200
#: Longest the closing or draining period lasts (RFC 9000 §10.2 asks for three PTOs;
#: aioquic restarts it at the idle timeout whenever a packet arrives meanwhile).
CLOSING_PERIOD = 1.0
#: Length of the connection ids this server issues.
CID_LENGTH = 8


def quic_configuration(config: Config) -> QuicConfiguration:
    """The server's QUIC settings: certificate, ALPN ``h3``, ``--timeout-keep-alive`` as the
    idle timeout (RFC 9000 §10.1)."""
    configuration = QuicConfiguration(
        is_client=False,
        alpn_protocols=["h3"],
        connection_id_length=CID_LENGTH,
        idle_timeout=max(config.timeout_keep_alive, 1.0),
    )
    try:
        configuration.load_cert_chain(
            config.ssl_certfile,  # type: ignore[arg-type]
            config.ssl_keyfile,
            config.ssl_keyfile_password,
        )
    except (OSError, ValueError, TypeError) as exc:
        raise TLSSetupError(f"could not load the certificate for HTTP/3: {exc}") from None
    return configuration


def quic_addresses(config: Config) -> list[tuple[str, int]]:
    """Where HTTP/3 is served: ``--host``/``--port`` for ``--http h3``, else ``--quic-bind``."""
    if config.http == "h3":
        return [(config.host, config.port)]
    return [split_host_port(item) for item in config.quic_bind]


async def open_quic_endpoints(config: Config, *, reuse_port: bool = False) -> list[QuicEndpoint]:
    """Bind one UDP socket per HTTP/3 address; raises :class:`BindError`.

    Worker processes each bind their own socket with ``reuse_port``: the
    kernel then hashes every client's datagrams to one worker, so a QUIC
    connection stays in the process that holds its state (a shared socket
    would scatter them).
    """
    configuration = quic_configuration(config)
    server_cert = server_certificate_pem(config.ssl_certfile)  # type: ignore[arg-type]
    endpoints: list[QuicEndpoint] = []
    try:
        for host, port in quic_addresses(config):
            sock = await bind_udp(host, port, reuse_port=reuse_port)
            endpoints.append(QuicEndpoint(sock, configuration, server_cert))
    except BaseException:
        for endpoint in endpoints:
            endpoint.sock.close()
        raise
    return endpoints


async def bind_udp(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise BindError(f"could not bind UDP {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise BindError(f"could not bind UDP {host}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


class QuicEndpoint:
    """One bound UDP socket and the QUIC connections reached through it."""

    __slots__ = (
        "_read_scope",
        "configuration",
        "connections",
        "control",
        "handshakes",
        "nursery",
        "routes",
        "server_cert",
        "sock",
        "state",
    )

    def __init__(
        self, sock: socket.socket, configuration: QuicConfiguration, server_cert: str | None
    ) -> None:
        self.sock = sock
        self.configuration = configuration
        #: The PEM of the certificate presented, for the ``tls`` scope extension.
        self.server_cert = server_cert
        #: Connection id -> its connection; every id a connection answers to is here.
        self.routes: dict[bytes, QuicConnectionTask] = {}
        self.connections: set[QuicConnectionTask] = set()
        #: Connections whose handshake has not completed yet.
        self.handshakes = 0
        self.state: ServerState | None = None
        self.nursery: trio.Nursery | None = None
        #: The endpoint's own handle (shutdown, open streams) is no connection to count.
        self.control = ConnectionControl(protocol="")
        self._read_scope = trio.CancelScope()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)

    def describe(self) -> str:
        """The address as the banner and :func:`palfrey.serve` report it."""
        host, port = self.address
        if ":" in host:
            host = f"[{host}]"
        return f"quic://{host}:{port}"

    async def run(self, state: ServerState, nursery: trio.Nursery) -> None:
        """Read and route datagrams until the server stops and the last connection is gone.

        ``nursery`` is where connection tasks run (the server's connection nursery,
        so the graceful-shutdown deadline covers them).
        """
        self.state = state
        self.nursery = nursery
        self.control.on_shutdown = self._on_shutdown
        state.connections.add(self.control)
        udp = trio.socket.from_stdlib_socket(self.sock)
        try:
            if state.stopping:
                self._on_shutdown()
            with self._read_scope:
                while True:
                    try:
                        data, addr = await udp.recvfrom(RECEIVE_SIZE)
                    except OSError:
                        # ICMP errors reported on the socket, and the like: keep reading.
                        continue
                    self.datagram_received(data, addr)
        finally:
            state.connections.discard(self.control)
            self.sock.close()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """Route one datagram; never raises."""
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=CID_LENGTH)
        except Exception:  # garbage: aioquic raises ValueError and others
            return
        supported = self.configuration.supported_versions
        if (
            header.packet_type != QuicPacketType.VERSION_NEGOTIATION
            and header.version is not None
            and header.version not in supported
        ):
            # Never in answer to a Version Negotiation packet: two servers with spoofed
            # addresses would answer each other forever. Nor to a datagram too small to
            # open a connection (RFC 9000 §5.2.2: a spoofed source would get more back
            # than it sent).
            if len(data) < MIN_INITIAL_SIZE:
                return
            self.send(
                encode_quic_version_negotiation(
                    source_cid=header.destination_cid,
                    destination_cid=header.source_cid,
                    supported_versions=supported,
                ),
                addr,
            )
            return
        connection = self.routes.get(header.destination_cid)
        if connection is None:
            if (
                header.packet_type != QuicPacketType.INITIAL
                or len(data) < MIN_INITIAL_SIZE
                or self.state is None
                or self.state.stopping
                or len(self.connections) >= self.state.config.h3_max_connections
                or self.handshakes >= MAX_HANDSHAKES
            ):
                return
            connection = self._new_connection(header.destination_cid, addr)
        connection.feed(data, addr)

    def _new_connection(self, original_cid: bytes, addr: Any) -> QuicConnectionTask:
        assert self.state is not None and self.nursery is not None
        protocol = H3Protocol(
            self.configuration,
            original_destination_connection_id=original_cid,
            max_header_list_size=self.state.config.h2_max_header_list_size,
            max_concurrent_streams=self.state.config.h2_max_concurrent_streams,
            stream_window=self.state.config.h3_receive_window,
        )
        connection = QuicConnectionTask(self, protocol, self.state, (str(addr[0]), int(addr[1])))
        self.connections.add(connection)
        self.handshakes += 1
        connection.route(original_cid)
        connection.route(protocol.host_cid)
        self.nursery.start_soon(connection.run)
        return connection

    def send(self, data: bytes, addr: Any) -> None:
        """Hand one datagram to the kernel, or drop it (QUIC recovers from loss)."""
        # BlockingIOError (the send buffer is full) included: never wait for room.
        with contextlib.suppress(OSError):
            self.sock.sendto(data, addr)

    def connection_done(self, connection: QuicConnectionTask) -> None:
        for cid in connection.cids:
            if self.routes.get(cid) is connection:
                del self.routes[cid]
        self.connections.discard(connection)
        if not connection.handshake_counted:
            self.handshakes -= 1
        if self.state is not None and self.state.stopping and not self.connections:
            self._read_scope.cancel()

    def _on_shutdown(self) -> None:
        """No new connection from now on; the endpoint ends with its last connection."""
        if not self.connections:
            self._read_scope.cancel()


class QuicConnectionTask:
    """Serves every stream of one QUIC connection until it closes."""

    #: HTTP/3 runs over TLS only.
    scheme = "https"

    __slots__ = (
        "_progress",
        "_queue",
        "_streams",
        "_wake",
        "app",
        "cids",
        "client",
        "control",
        "endpoint",
        "handshake_counted",
        "nursery",
        "protocol",
        "proxy",
        "server",
        "state",
        "tls",
    )

    def __init__(
        self, endpoint: QuicEndpoint, protocol: H3Protocol, state: ServerState, client: Address
    ) -> None:
        self.endpoint = endpoint
        self.protocol = protocol
        self.state = state
        self.client = client
        self.server: Address = endpoint.address
        self.control = ConnectionControl(protocol="h3")
        self.cids: set[bytes] = set()
        self.nursery: trio.Nursery | None = None
        #: The handshake finished and the endpoint no longer counts this one as pending.
        self.handshake_counted = False
        #: The ``tls`` scope extension, once the handshake has settled what it says.
        self.tls: dict[str, Any] | None = None
        self.app, self.proxy = connection_app(state, client)
        self._queue: deque[tuple[bytes, Any]] = deque()
        self._streams: dict[int, H3Stream] = {}
        self._wake = trio.Event()
        self._progress = trio.Event()

    def _tls_extension(self) -> dict[str, Any]:
        """QUIC always runs TLS 1.3 (RFC 9001), and aioquic's server asks for no client
        certificate, so only the server certificate and the cipher suite vary."""
        return {
            "server_cert": self.endpoint.server_cert,
            "client_cert_chain": [],
            "client_cert_name": None,
            "client_cert_error": None,
            "tls_version": 0x0304,
            "cipher_suite": self.protocol.cipher_suite,
        }

    # Called by the endpoint.

    def route(self, cid: bytes) -> None:
        self.cids.add(cid)
        self.endpoint.routes[cid] = self

    def feed(self, data: bytes, addr: Any) -> None:
        if len(self._queue) < MAX_QUEUED_DATAGRAMS:
            self._queue.append((data, addr))
            self._wake.set()

    # Called by streams.

    @property
    def writable(self) -> bool:
        return not self.protocol.closing and not self.protocol.terminated

    def kick(self) -> None:
        """Something was queued: the task sends it (and recomputes its timer)."""
        self._wake.set()

    async def wait_for_progress(self) -> None:
        """Until the next batch of datagrams from the client was processed (e.g. ACKs)."""
        await self._progress.wait()

    # The task.

    async def run(self) -> None:
        control = self.control
        control.on_shutdown = self._on_shutdown
        self.state.connections.add(control)
        if self.state.metrics is not None:
            self.state.metrics.connections_total += 1
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                if self.state.stopping:
                    self._on_shutdown()
                await self._service()
                nursery.cancel_scope.cancel()
        except Exception:
            logger.exception("Unhandled error on an HTTP/3 connection; closing it")
        finally:
            if not self.protocol.terminated and not self.protocol.closing:
                # Cancelled (the graceful shutdown ran out) or failed: say goodbye once.
                self.protocol.close(ErrorCode.H3_INTERNAL_ERROR)
                self._transmit()
            for stream in self._streams.values():
                stream.lost()
            self._progress.set()
            self.state.connections.discard(control)
            self.endpoint.connection_done(self)

    async def _service(self) -> None:
        protocol = self.protocol
        handshake_deadline = trio.current_time() + self.state.config.timeout_tls_handshake
        closing_deadline = math.inf
        while True:
            self._wake = trio.Event()
            now = trio.current_time()
            queue = self._queue
            if queue:
                while queue:
                    data, addr = queue.popleft()
                    self._dispatch(protocol.receive_datagram(data, addr, now))
                progress, self._progress = self._progress, trio.Event()
                progress.set()
            if (
                protocol.goaway_sent
                and not self._streams
                and not protocol.closing
                and protocol.responses_delivered
            ):
                # RFC 9114 §5.2: once the streams below the GOAWAY are answered.
                protocol.close()
            timer = protocol.get_timer()
            if timer is not None and timer <= now:
                self._dispatch(protocol.handle_timer(now))
                timer = protocol.get_timer()
            self._transmit()
            if protocol.terminated:
                return
            if protocol.closing:
                if closing_deadline == math.inf:
                    closing_deadline = now + CLOSING_PERIOD
                elif now >= closing_deadline:
                    return
            deadline = min(math.inf if timer is None else timer, closing_deadline)
            if not self.handshake_counted:
                if protocol.handshake_complete:
                    self.handshake_counted = True
                    self.endpoint.handshakes -= 1
                    self.tls = self._tls_extension()
                elif now >= handshake_deadline:
                    logger.debug("QUIC handshake from %s timed out", self.client)
                    self.state.count_timeout("tls_handshake")
                    return
                else:
                    deadline = min(deadline, handshake_deadline)
            with trio.move_on_at(deadline):
                await self._wake.wait()

    def _transmit(self) -> None:
        send = self.endpoint.send
        for data, addr in self.protocol.datagrams_to_send(trio.current_time()):
            send(data, addr)

    def _dispatch(self, events: list[Any]) -> None:
        streams = self._streams
        for event in events:
            kind = type(event)
            if kind is StreamData:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.data_received(event.data)
                else:
                    self.protocol.acknowledge(event.stream_id, len(event.data))
            elif kind is RequestReceived:
                self._start_stream(event)
            elif kind is StreamEnded:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.ended()
            elif kind is StreamReset:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.lost()
            elif kind is ConnectionIdIssued:
                self.route(event.cid)
            elif kind is ConnectionIdRetired:
                self.cids.discard(event.cid)
                if self.endpoint.routes.get(event.cid) is self:
                    del self.endpoint.routes[event.cid]
            elif kind is ConnectionTerminated:
                for stream in streams.values():
                    stream.lost()

    def _start_stream(self, request: RequestReceived) -> None:
        stream = H3Stream(self, request)
        self._streams[request.stream_id] = stream
        self.control.open_streams = len(self._streams)
        assert self.nursery is not None
        self.nursery.start_soon(serve_stream, stream, request, None)

    def stream_finished(self, stream: H3Stream) -> None:
        """The stream's task is over: forget it, and stop reading a body it left unread."""
        stream_id = stream.stream_id
        del self._streams[stream_id]
        self.protocol.stream_finished(stream_id, request_ended=stream.request_ended)
        self.control.open_streams = len(self._streams)
        self.kick()

    def _on_shutdown(self) -> None:
        """The server is stopping: GOAWAY (RFC 9114 §5.2), then CONNECTION_CLOSE once the
        streams below it are answered."""
        self.protocol.send_goaway()
        self.kick()
