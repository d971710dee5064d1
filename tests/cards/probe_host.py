"""Test/benchmark helper: a SimProbe on the master side of a pty (the rig opens the slave), and
a kernel Slot that talks to it through harness messages, as the simulated terminal would."""

from __future__ import annotations

import os
import queue
import select
import threading
import time
import tty
from typing import Any

from protocols.errors import NoResponse
from sim.probe import ProbeOutput, SimProbe
from sim.terminal.emv import CardError


class PtyProbeHost:
    """Hosts *probe* on a pty master in a thread; ``slave_path`` is the rig's end."""

    def __init__(self, probe: SimProbe) -> None:
        self.probe = probe
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.slave_path = os.ttyname(self.slave)
        self.harness: queue.Queue[dict[str, Any]] = queue.Queue()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PtyProbeHost:
        self._thread.start()
        with self._lock:
            self._emit(self.probe.harness_connected(time.monotonic()))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        os.close(self.master)
        os.close(self.slave)

    def _emit(self, out: ProbeOutput) -> None:
        if out.link_out:
            os.write(self.master, out.link_out)
        for msg in out.harness_out:
            self.harness.put(msg)

    def send(self, msg: dict[str, Any]) -> None:
        with self._lock:
            self._emit(self.probe.feed_harness(msg, time.monotonic()))

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.01)
            with self._lock:
                now = time.monotonic()
                if ready:
                    data = os.read(self.master, 4096)
                    self._emit(self.probe.feed_link(data, now))
                self._emit(self.probe.poll(now))

    def expect(self, kind: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NoResponse(f"PtyProbeHost: no {kind!r} harness message within {timeout} s")
            try:
                msg = self.harness.get(timeout=left)
            except queue.Empty:
                continue
            if msg.get("t") == kind:
                return msg


class HarnessSlot:
    """The terminal's view of the slot (sim.terminal.emv.Slot) over harness messages."""

    def __init__(self, host: PtyProbeHost) -> None:
        self.host = host

    def power_on(self, timeout: float) -> bytes:
        self.host.send({"t": "card_power", "on": True})
        msg = self._wait("atr", timeout)
        return bytes.fromhex(msg["atr"])

    def transmit(self, capdu: bytes, timeout: float) -> bytes:
        self.host.send({"t": "capdu", "data": capdu.hex()})
        return bytes.fromhex(self._wait("rapdu", timeout)["data"])

    def power_off(self) -> None:
        self.host.send({"t": "card_power", "on": False})

    def _wait(self, kind: str, timeout: float) -> dict[str, Any]:
        try:
            msg = self.host.expect(kind, timeout)
        except NoResponse as exc:
            raise CardError("mute", str(exc)) from exc
        if "error" in msg:
            raise CardError(msg["error"], f"{kind} error from the slot")
        return msg
