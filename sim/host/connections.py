"""What the host's two servers (ISO 8583 over TCP, the control socket) share: they keep the
connections their handler threads serve, so stopping can shut every one of them down."""

from __future__ import annotations

import socket
import threading


class TrackedConnections:
    """Mixin for a ``socketserver`` server: handlers call :meth:`track` on setup and finish;
    :meth:`drop_all` shuts down every connection still open (their threads then end)."""

    def init_tracking(self) -> None:
        self._conns_lock = threading.Lock()
        self.connections: set[socket.socket] = set()

    def track(self, sock: socket.socket, add: bool) -> None:
        with self._conns_lock:
            if add:
                self.connections.add(sock)
            else:
                self.connections.discard(sock)

    def drop_all(self) -> None:
        with self._conns_lock:
            conns = list(self.connections)
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
