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

from protocols.errors import ProtocolError
from protocols.iso8583 import Header, LengthFramer, Tpdu, unframe
from protocols.masking import scrub
from sim.host.control import ControlServer
from sim.host.engine import AcquirerEngine, FrameAnswer
from sim.serving import EngineServer, SimServer, TrackedHandler

logger = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]


class _Handler(TrackedHandler):
    server: _TcpServer

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
        if reply.drop:
            logger.info("%s: rule #%s: response dropped (never answered)", peer, reply.rule_id)
            return True
        if reply.delay_s > 0 and not self.server.wait_rule_delay(peer, reply.rule_id,
                                                                 reply.delay_s):
            return False
        sock.sendall(reply.frame)
        return True


class _TcpServer(EngineServer[AcquirerEngine], socketserver.ThreadingTCPServer):
    def __init__(self, address: tuple[str, int], engine: AcquirerEngine, clock: Clock,
                 idle_timeout: float, lock: threading.Lock, max_delay: float) -> None:
        self.init_engine(engine, clock, idle_timeout, lock, max_delay)
        super().__init__(address, _Handler)

    def respond(self, tpdu: Tpdu, header: Header, payload: bytes) -> FrameAnswer:
        with self.engine_lock:
            return self.engine.answer_frame(tpdu, header, payload, self.clock())


class AcquirerServer(SimServer[_TcpServer]):
    """Listen on *host*:*port* (0 = ephemeral) and serve the engine (:meth:`start`,
    :meth:`stop`); with *control_path*, the control socket too."""

    thread_name = "acquirer-server"
    label = "acquirer host"

    def __init__(self, engine: AcquirerEngine, host: str, port: int, *,
                 idle_timeout: float = 30.0, clock: Clock = dt.datetime.now,
                 max_delay: float = 60.0, control_path: str | Path | None = None) -> None:
        self.engine = engine
        self._clock = clock
        self._idle_timeout = idle_timeout
        self.max_delay = max_delay
        #: The engine's lock: held while it answers a request or a control op.
        self.lock = threading.Lock()
        super().__init__(host, port, control=None if control_path is None
                         else ControlServer(engine, control_path, self.lock))

    def _listen(self) -> _TcpServer:
        return _TcpServer(self._bind, self.engine, self._clock, self._idle_timeout, self.lock,
                          self.max_delay)
