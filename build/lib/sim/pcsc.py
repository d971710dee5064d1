"""A private pcscd for one virtual bench.

:class:`PcscDaemon` writes its own ``reader.conf.d`` with ONE vpcd entry (vpcd makes two
readers of it, "Virtual PCD 00 00" on ``readers_port_base`` and "Virtual PCD 00 01" on
``readers_port_base + 1``; two entries get cross-wired), and starts ``pcscd -f -c CONFDIR`` in a
private mount namespace with its own tmpfs on /run/pcscd, so it neither sees nor disturbs the
machine's pcscd.  Clients reach it with ``PCSCLITE_CSOCK_NAME=<client_socket>``.

With ``netns_name`` the daemon also runs in a network namespace of that name (created here if
missing, deleted on stop if created here), so vpcd's listeners are not on the machine's
interfaces; the card process must then run in that namespace too
(``ip netns exec NAME python -m sim.card …``), where the ports are on 127.0.0.1.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from protocols.errors import NoResponse, SimError

log = logging.getLogger(__name__)

READER_NAMES = ("Virtual PCD 00 00", "Virtual PCD 00 01")
VPCD_DRIVER = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"


def reader_conf(port_base: int) -> str:
    """The ONE vpcd entry; vpcd serves slot n on ``port_base + n``."""
    return (
        '# written by sim.pcsc: one vpcd entry, two readers on port_base and port_base+1\n'
        'FRIENDLYNAME "Virtual PCD"\n'
        f"DEVICENAME   /dev/null:0x{port_base:04X}\n"
        f"LIBPATH      {VPCD_DRIVER}\n"
        f"CHANNELID    0x{port_base:04X}\n")


class PcscDaemon:
    """Start/stop one private pcscd.  ``start()`` returns when its client socket answers."""

    def __init__(self, workdir: str | Path, readers_port_base: int = 35963,
                 netns_name: str | None = None, *, start_timeout: float = 5.0,
                 stop_timeout: float = 3.0, debug: bool = False) -> None:
        if not 1024 <= readers_port_base <= 65534:
            raise SimError(f"PcscDaemon: readers_port_base {readers_port_base} not in 1024-65534")
        self.workdir = Path(workdir)
        self.port_base = readers_port_base
        self.netns_name = netns_name
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.debug = debug
        self._proc: subprocess.Popen[bytes] | None = None
        self._created_netns = False
        self._log_file: Path = self.workdir / "pcscd.log"

    def __repr__(self) -> str:
        where = f", netns {self.netns_name}" if self.netns_name else ""
        return f"PcscDaemon(ports {self.port_base}/{self.port_base + 1}{where})"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise SimError(f"{self!r}: pid needs a started daemon; state is STOPPED")
        return self._proc.pid

    @property
    def client_socket(self) -> str:
        """Value for ``PCSCLITE_CSOCK_NAME`` in clients (reachable from any namespace)."""
        return f"/proc/{self.pid}/root/run/pcscd/pcscd.comm"

    @property
    def reader_names(self) -> tuple[str, str]:
        return READER_NAMES

    @property
    def confdir(self) -> Path:
        return self.workdir / "reader.conf.d"

    @property
    def log_path(self) -> Path:
        return self._log_file

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _command(self) -> list[str]:
        inner = (f"mkdir -p /run/pcscd && mount -t tmpfs tmpfs /run/pcscd && exec pcscd -f "
                 f"{'-d ' if self.debug else ''}-c {shlex.quote(str(self.confdir))}")
        cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", inner]
        if self.netns_name:
            cmd = ["ip", "netns", "exec", self.netns_name, *cmd]
        return cmd

    def _ensure_netns(self) -> None:
        assert self.netns_name is not None
        existing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                  timeout=5, check=False).stdout.split()
        if self.netns_name not in existing:
            subprocess.run(["ip", "netns", "add", self.netns_name], check=True, timeout=5,
                           capture_output=True)
            self._created_netns = True
        subprocess.run(["ip", "-n", self.netns_name, "link", "set", "lo", "up"], check=True,
                       timeout=5, capture_output=True)

    def start(self) -> None:
        if self.running:
            return
        if os.geteuid() != 0:
            raise SimError(f"{self!r}: start() needs root (mount namespace, tmpfs on /run/pcscd"
                           f"{', network namespace' if self.netns_name else ''}); "
                           f"running as uid {os.geteuid()}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.confdir.mkdir(exist_ok=True)
        for old in self.confdir.iterdir():
            old.unlink()
        (self.confdir / "vpcd").write_text(reader_conf(self.port_base), encoding="ascii")
        try:
            if self.netns_name:
                self._ensure_netns()
            with open(self._log_file, "wb") as logf:
                self._proc = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL,
                                              stdout=logf, stderr=subprocess.STDOUT,
                                              start_new_session=True)
        except (OSError, subprocess.SubprocessError) as exc:
            self._cleanup_netns()
            raise SimError(f"{self!r}: start() failed: {exc}") from exc
        try:
            self._wait_socket()
        except BaseException:
            self.stop()
            raise
        log.info("%r started, pid %d, socket %s", self, self.pid, self.client_socket)

    def _wait_socket(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        tick = threading.Event()
        last = "not created yet"
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                tail = self._log_tail()
                raise SimError(f"{self!r}: pcscd exited with status {self._proc.returncode} "
                               f"during start; log {self._log_file}: {tail}")
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(0.5)
                    s.connect(self.client_socket)
                return
            except OSError as exc:
                last = exc.strerror or str(exc)
            if time.monotonic() >= deadline:
                raise NoResponse(f"{self!r}: client socket {self.client_socket} did not answer "
                                 f"within {self.start_timeout:.1f} s (last: {last})")
            tick.wait(0.02)   # nothing to wait on but the socket appearing: bounded poll

    def _log_tail(self) -> str:
        try:
            return self._log_file.read_text(errors="replace")[-400:].strip()
        except OSError:
            return "<no log>"

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL after ``stop_timeout``; deletes a netns created here."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning("%r: pcscd pid %d ignored SIGTERM for %.1f s, killing", self,
                            proc.pid, self.stop_timeout)
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=self.stop_timeout)
            except ProcessLookupError:
                pass
        self._cleanup_netns()

    def _cleanup_netns(self) -> None:
        if self._created_netns and self.netns_name:
            subprocess.run(["ip", "netns", "delete", self.netns_name], timeout=5,
                           capture_output=True, check=False)
            self._created_netns = False

    def __enter__(self) -> PcscDaemon:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
