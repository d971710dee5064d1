"""HTTP/1.1 server hosting :class:`~sim.qr.engine.QrPlatformEngine` (stdlib ``http.server``).

It holds no logic: it reads one bounded request (``POST``, ``Content-Length`` at most
:data:`protocols.qr.MAX_BODY`, read within *idle_timeout*), hands the path and the body to the
engine under the engine's lock, and carries out what a rule asks of the answer (late, or
never).  Everything it refuses itself (another method, no or a too large ``Content-Length``, a
chunked body, a request line ``http.server`` cannot parse) goes through the engine's one way of
refusing (:meth:`~sim.qr.engine.QrPlatformEngine.refuse_request`), so every answer is the
platform's JSON and every request is in the ledger — never an HTML error page or a traceback.

Keep-alive connections are served in order; each waits at most *idle_timeout* for its next
request.  A rule's delay waits in the connection's thread, outside the engine's lock (bounded by
*max_delay*); a dropped answer leaves the connection silent until *idle_timeout*, then closes it
(a client that waits sees no answer, as when the platform never answers).  A ticker thread
expires orders twice a second.  With *control_path* the server also hosts the control socket
(:mod:`sim.qr.control`), sharing the engine's lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from protocols.digits import ascii_digits
from protocols.qr import CONTENT_TYPE, MAX_BODY, ErrorCode
from sim.qr.control import ControlServer
from sim.qr.engine import PlatformAnswer, QrPlatformEngine
from sim.serving import EngineServer, SimServer

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
#: How often the ticker expires orders (s).
TICK_S = 0.5
#: http.server's own refusals (before a path is known) → the platform's code.
_HTTP_ERRORS: dict[int, ErrorCode] = {
    HTTPStatus.NOT_IMPLEMENTED: ErrorCode.METHOD_NOT_ALLOWED,
    HTTPStatus.METHOD_NOT_ALLOWED: ErrorCode.METHOD_NOT_ALLOWED,
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: ErrorCode.BODY_TOO_LARGE,
    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE: ErrorCode.BODY_TOO_LARGE,
    HTTPStatus.REQUEST_URI_TOO_LONG: ErrorCode.BODY_TOO_LARGE,
}


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.1"  # a line it cannot parse still gets status + headers
    server_version = "QrPlatformSim/1"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.idle_timeout)  # bounds every read
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's name)
        logger.debug("%s: " + format, self.address_string(), *args)

    def _path(self) -> str:
        return urlsplit(getattr(self, "path", "") or "").path

    # -- refusals of http.server itself, and of this layer ---------------------------------------
    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """http.server's own refusals (bad request line, unsupported method, headers too long)
        answered as the platform's JSON."""
        error = _HTTP_ERRORS.get(code, ErrorCode.BAD_REQUEST)
        text = f"HTTP {code}: {message or HTTPStatus(code).phrase}"
        self.close_connection = True
        self._refuse(error, text)

    def _refuse(self, error: ErrorCode, message: str) -> None:
        answer = self.server.refuse(self._path(), error, message)
        self.close_connection = True
        self._send(answer)

    def _unsupported(self) -> None:
        self._refuse(ErrorCode.METHOD_NOT_ALLOWED, f"{self.command} {self._path()}: the "
                                                   f"platform takes POST only")

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _unsupported

    # -- the platform's requests -----------------------------------------------------------------
    def do_POST(self) -> None:
        if self.headers.get("Transfer-Encoding"):
            self._refuse(ErrorCode.BAD_REQUEST, "a chunked body is not accepted; send "
                                                "Content-Length")
            return
        text = self.headers.get("Content-Length")
        digits = (text or "").strip(" \t")
        if not ascii_digits(digits):  # str.isdigit() took '²', which int() refuses
            self._refuse(ErrorCode.BAD_REQUEST, f"Content-Length required (ASCII digits), got "
                                                f"{text if text is None else text[:20]!r}")
            return
        if len(digits.lstrip("0")) > len(str(MAX_BODY)) or int(digits) > MAX_BODY:
            self._refuse(ErrorCode.BODY_TOO_LARGE, f"body of {digits[:20]} bytes; at most "
                                                   f"{MAX_BODY}")
            return
        length = int(digits)
        try:
            body = self.rfile.read(length)
        except OSError as exc:  # TimeoutError included: the bound is idle_timeout
            logger.info("%s: body not received within %.1f s (%s)", self.address_string(),
                        self.server.idle_timeout, exc)
            self.close_connection = True
            return
        if len(body) < length:
            logger.info("%s: connection closed after %d of %d body bytes",
                        self.address_string(), len(body), length)
            self.close_connection = True
            return
        answer = self.server.respond(self._path(), body)
        if answer.drop:
            logger.info("%s: rule #%s: answer dropped (never answered)", self.address_string(),
                        answer.rule_id)
            self.server.stopping.wait(self.server.idle_timeout)
            self.close_connection = True
            return
        if answer.delay_s > 0 and not self.server.wait_rule_delay(
                self.address_string(), answer.rule_id, answer.delay_s):
            self.close_connection = True
            return
        self._send(answer)

    def _send(self, answer: PlatformAnswer) -> None:
        try:
            self.send_response(answer.http_status)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(answer.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(answer.body)
            self.wfile.flush()
        except OSError as exc:
            logger.info("%s: send failed: %s", self.address_string(), exc)
            self.close_connection = True


class _HttpServer(EngineServer[QrPlatformEngine], ThreadingHTTPServer):
    def __init__(self, address: tuple[str, int], engine: QrPlatformEngine, clock: Clock,
                 idle_timeout: float, lock: threading.Lock, max_delay: float) -> None:
        self.init_engine(engine, clock, idle_timeout, lock, max_delay)
        super().__init__(address, _Handler)

    def respond(self, path: str, body: bytes) -> PlatformAnswer:
        with self.engine_lock:
            return self.engine.answer(path, body, self.clock())

    def refuse(self, path: str, code: ErrorCode, message: str) -> PlatformAnswer:
        with self.engine_lock:
            return self.engine.refuse_request(path, code, message, self.clock())


class QrPlatformServer(SimServer[_HttpServer]):
    """Listen on *host*:*port* (0 = ephemeral) and serve the engine (:meth:`start`,
    :meth:`stop`); with *control_path*, the control socket too; a ticker expires orders every
    *tick_s*."""

    thread_name = "qr-platform-server"
    label = "QR platform"

    def __init__(self, engine: QrPlatformEngine, host: str, port: int, *,
                 idle_timeout: float = 30.0, clock: Clock = time.time,
                 max_delay: float = 60.0, control_path: str | Path | None = None,
                 tick_s: float = TICK_S) -> None:
        self.engine = engine
        self._clock = clock
        self._idle_timeout = idle_timeout
        self.max_delay = max_delay
        self.tick_s = tick_s
        #: The engine's lock: held while it answers a request, a control op or a tick.
        self.lock = threading.Lock()
        super().__init__(host, port, control=None if control_path is None
                         else ControlServer(engine, control_path, self.lock, clock=clock))

    def _listen(self) -> _HttpServer:
        return _HttpServer(self._bind, self.engine, self._clock, self._idle_timeout, self.lock,
                           self.max_delay)

    def _workers(self, server: _HttpServer) -> list[threading.Thread]:
        return [threading.Thread(target=self._tick, args=(server,), name="qr-platform-ticker",
                                 daemon=True)]

    def _tick(self, server: _HttpServer) -> None:
        while not server.stopping.wait(self.tick_s):
            with self.lock:
                self.engine.tick(self._clock())


__all__ = ["QrPlatformServer", "TICK_S"]
