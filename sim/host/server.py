"""TCP server hosting :class:`~sim.host.engine.AcquirerEngine`: framing in, framing out, and
what a host rule asks of the answer (late, or never).  One transaction per connection (UnionPay
short connection) is the normal case; several messages on one connection are served in order.
Every read is bounded by *idle_timeout*; a rule's delay by *max_delay* (it waits in the
connection's own thread, outside the engine's lock, so other connections go on).  With
*control_path* the server also hosts the control socket (:mod:`sim.host.control`), sharing the
engine's lock.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path

from protocols.errors import NoResponse, ProtocolError, RigError, SimError, TransportError
from protocols.iso8583 import Header, LengthFramer, Tpdu, unframe
from protocols.masking import scrub
from sim.host.connections import TrackedConnections
from sim.host.control import ControlServer
from sim.host.engine import AcquirerEngine, FrameAnswer

logger = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]


class _Handler(socketserver.BaseRequestHandler):
    server: _TcpServer

    def setup(self) -> None:
        self.server.track(self.request, True)

    def finish(self) -> None:
        self.server.track(self.request, False)

    def handle(self) -> None:
        sock: socket.socket = self.request
        peer = f"{self.client_address[0]}:{self.client_address[1]}"
        sock.settimeout(self.server.idle_timeout)
        framer = LengthFramer()
        while True:
            try:
                data = sock.recv(4096)
            except TimeoutError:
                logger.info("%s: idle for %.1f s, closing (%d bytes pending)", peer,
                            self.server.idle_timeout, framer.pending)
                return
            except OSError as exc:
                logger.info("%s: connection error %s", peer, exc)
                return
            if not data:
                return
            try:
                for frame in framer.feed(data):
                    tpdu, header, payload = unframe(frame)
                    reply = self.server.respond(tpdu, header, payload)
                    if not self._deliver(sock, peer, reply):
                        return
            except ProtocolError as exc:
                logger.warning("%s: dropping connection: %s", peer, scrub(str(exc)))
                return
            except OSError as exc:
                logger.info("%s: send failed: %s", peer, exc)
                return


    def _deliver(self, sock: socket.socket, peer: str, reply: FrameAnswer) -> bool:
        """Send *reply* as a rule asks (now, late, or never); False when the connection ended
        (or the server is stopping)."""
        rule = f"rule #{reply.rule_id}"
        if reply.drop:
            logger.info("%s: %s: response dropped (never answered)", peer, rule)
            return True
        if reply.delay_s > 0:
            delay = min(reply.delay_s, self.server.max_delay)
            logger.info("%s: %s: answering %.1f s late%s", peer, rule, delay,
                        "" if delay == reply.delay_s else
                        f" (asked {reply.delay_s:.1f} s, bounded by --max-delay)")
            if self.server.stopping.wait(delay):
                return False
        sock.sendall(reply.frame)
        return True


class _TcpServer(TrackedConnections, socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: tuple[str, int], engine: AcquirerEngine, clock: Clock,
                 idle_timeout: float, lock: threading.Lock, max_delay: float) -> None:
        self.engine = engine
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.max_delay = max_delay
        self.stopping = threading.Event()
        self._engine_lock = lock
        self.init_tracking()
        super().__init__(address, _Handler)

    def respond(self, tpdu: Tpdu, header: Header, payload: bytes) -> FrameAnswer:
        with self._engine_lock:
            return self.engine.answer_frame(tpdu, header, payload, self.clock())



class AcquirerServer:
    """Listen on *host*:*port* (0 = ephemeral) and serve the engine (:meth:`start`,
    :meth:`stop`); with *control_path*, the control socket too."""

    def __init__(self, engine: AcquirerEngine, host: str, port: int, *,
                 idle_timeout: float = 30.0, clock: Clock = dt.datetime.now,
                 max_delay: float = 60.0, control_path: str | Path | None = None) -> None:
        self.engine = engine
        self._bind = (host, port)
        self._clock = clock
        self._idle_timeout = idle_timeout
        self.max_delay = max_delay
        #: The engine's lock: held while it answers a request or a control op.
        self.lock = threading.Lock()
        self.control = (None if control_path is None
                        else ControlServer(engine, control_path, self.lock))
        self._server: _TcpServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise SimError(f"AcquirerServer{self._bind}: address needs a started server; "
                           f"state is STOPPED")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> tuple[str, int]:
        try:
            self._server = _TcpServer(self._bind, self.engine, self._clock, self._idle_timeout,
                                      self.lock, self.max_delay)
        except OSError as exc:
            raise TransportError(f"AcquirerServer: cannot listen on "
                                 f"{self._bind[0]}:{self._bind[1]} ({exc})") from exc
        if self.control is not None:
            try:
                self.control.start()
            except RigError:
                self._server.server_close()
                self._server = None
                raise
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="acquirer-server", daemon=True)
        self._thread.start()
        logger.info("acquirer host listening on %s:%d", *self.address)
        return self.address

    def stop(self, timeout: float = 5.0) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        if self.control is not None:
            self.control.stop(timeout)
        server.stopping.set()
        server.shutdown()
        server.drop_all()
        server.server_close()
        thread.join(timeout)
        self._server = self._thread = None
        if thread.is_alive():
            raise NoResponse(f"AcquirerServer.stop(): serve thread still running after "
                             f"{timeout} s")

    def __enter__(self) -> AcquirerServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
