"""Hosts :class:`~sim.terminal.firmware.TerminalFirmware` on its two wires; holds no logic.

* the ECR pty master fd: bytes → :class:`protocols.ecr.EcrLink` → messages → firmware;
* the harness socket (JSON lines via :class:`protocols.jsonlines.JsonLineBuffer`,
  docs/internals.md): ``atr``/``rapdu`` go to the card slot
  (:class:`~sim.terminal.slot.HarnessSlot`), ``cl_atr``/``cl_rapdu`` to the contactless reader
  (the slot's ``contactless``), everything else to the firmware; a bad line is logged (masked)
  and skipped;
* blocking jobs (kernel, acquirer) run in one worker thread; results come back through a
  wake-up pipe.  One ``select`` loop, its timeout = the nearest link or firmware deadline;
* :class:`~sim.terminal.firmware.Freeze` (the MCU hung): from then on the ECR line is read and
  dropped (a UART nobody services: no ACK, no retransmission) and the firmware gets no input;
  the process lives on until the bench cuts the power;
* :class:`~sim.terminal.firmware.PowerOff`: the frames already queued on the ECR link go out
  (bounded by :data:`POWER_OFF_FRAMES` × the link's bound), then the notice goes on the harness
  and the loop ends;
* optionally a second serial port, the Concert pty master fd (docs/ecr-concert.md): bytes →
  :class:`~sim.terminal.concert.ConcertPort` → the ECR request it makes → firmware; every ECR
  message the firmware sends still goes to the test port and is also shown to the port (its
  request's final response becomes the Concert answer).  Frozen: its bytes are dropped too.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import selectors
import socket
import termios
import threading
import time
import tty
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from protocols import ecr
from protocols.errors import DecodeError
from protocols.jsonlines import JsonLineBuffer, encode_line
from protocols.masking import scrub
from sim.terminal.concert import ConcertPort
from sim.terminal.firmware import (
    POS_ENTRY_CHIP,
    Action,
    AuthJob,
    ChipJob,
    FirstAcJob,
    FlushEcr,
    Freeze,
    JobResult,
    PowerOff,
    Profile,
    QrAnswer,
    QrJob,
    ReversalJob,
    SecondAcJob,
    SendEcr,
    SendHarness,
    Services,
    SettleJob,
    SignInJob,
    StartJob,
    TapJob,
    TerminalFirmware,
    UploadEndJob,
    UploadJob,
    VerifyJob,
    perform,
)
from sim.terminal.slot import CONTACTLESS, HarnessSlot, SlotError

log = logging.getLogger(__name__)

#: Field 22 of a chip-read transaction: 05 (ICC) + 1 (PIN entry capability).
ENTRY_MODE_CHIP_PIN = POS_ENTRY_CHIP
ECR_RETRY_S = 0.1  # after EIO (no process has the slave open) look at the port again this late
IDLE_WAIT_S = 1.0
#: Harness messages that answer the card slot / the contactless reader (everything else goes to
#: the firmware).
SLOT_REPLIES = frozenset({"atr", "rapdu"})
CL_REPLIES = frozenset({"cl_atr", "cl_rapdu"})
#: Powering off, the frames still queued get this many link bounds to go out.
POWER_OFF_FRAMES = 3


class KernelServices:
    """The real blocking work: sim.terminal.emv over the slot, sim.terminal.acquirer over TCP.

    Both modules are imported where used, so the terminal boots and answers STATUS without them.
    """

    def __init__(self, slot: HarnessSlot, profile: Profile, host: str, port: int,
                 netif: str | None = None, qr_client: Any = None) -> None:
        self.slot = slot
        self.qr_client = qr_client
        """The QR platform's client (protocols.qrclient.QrPlatformClient; None: no platform)."""
        self.profile = profile
        self.host = host
        self.port = port
        self.netif = netif
        """The terminal's network interface, whose carrier the acquirer client checks before
        each dial (None: no check)."""
        self._client: Any = None

    @property
    def card_errors(self) -> tuple[type[BaseException], ...]:
        from sim.terminal.emv import CardError
        return (CardError, SlotError)

    @property
    def comms_errors(self) -> tuple[type[BaseException], ...]:
        from sim.terminal.acquirer import CommsError
        return (CommsError,)

    def _acquirer(self) -> Any:
        if self._client is None:
            from sim.terminal.acquirer import AcquirerClient
            p = self.profile
            self._client = AcquirerClient(
                self.host, self.port, terminal_id=p.terminal_id, merchant_id=p.merchant_id,
                master_key=p.master_key, connect_timeout=p.connect_s,
                response_timeout=p.response_s, currency=p.currency_code, netif=self.netif)
        return self._client

    def read_card(self, job: ChipJob) -> Any:
        from sim.terminal.emv import TxnParams, read_chip
        return read_chip(self.slot, TxnParams(
            job.amount_minor, job.txn_date, job.unpredictable_number,
            currency_code=job.currency_code, country_code=job.country_code),
            timeout=job.timeout)

    def read_tap(self, job: TapJob) -> Any:
        from sim.terminal.emv import CardError, TxnParams, read_contactless
        reader = self.slot.contactless
        if reader is None:
            raise CardError("unsupported", "this terminal has no contactless reader")
        return read_contactless(reader, TxnParams(
            job.amount_minor, job.txn_date, job.unpredictable_number,
            currency_code=job.currency_code, country_code=job.country_code),
            cvm_required=job.cvm_required, timeout=job.timeout)

    def verify_pin(self, job: VerifyJob) -> Any:
        from sim.terminal.emv import verify_pin
        return verify_pin(self.slot, job.card, job.pin)

    def first_ac(self, job: FirstAcJob) -> Any:
        from sim.terminal.emv import generate_first_ac
        return generate_first_ac(self.slot, job.card, pin_verified=job.pin_verified)

    def second_ac(self, job: SecondAcJob) -> Any:
        from sim.terminal.emv import generate_second_ac
        return generate_second_ac(self.slot, job.card, approve=job.approve,
                                  response_code=job.response_code, issuer_auth=job.issuer_auth)

    def sign_in(self, job: SignInJob) -> Any:
        return self._acquirer().sign_in(operator=job.operator, stan=job.stan,
                                        batch_no=job.batch_no)

    def authorize(self, job: AuthJob) -> Any:
        card = job.card
        card_fields: dict[str, Any] = {}
        if card is not None:
            card_fields = dict(
                pan=card.pan, expiry=card.expiry,
                pan_seq=None if card.pan_seq is None else str(card.pan_seq),
                track2_equivalent=card.track2_equivalent, icc_data=card.icc_data,
                entry_mode=job.pos_entry or ENTRY_MODE_CHIP_PIN)
        return self._acquirer().financial(
            job.txn_type, keys=job.keys, stan=job.stan, batch_no=job.batch_no,
            amount_minor=job.amount_minor, pin=job.pin, original=job.original, **card_fields)

    def reverse(self, job: ReversalJob) -> Any:
        """The 0400 repeats the reversed request: card fields only if it carried them (a card
        was read: field 22 recorded), the original (61/37) if it named one."""
        e, card = job.entry, job.card
        card_fields: dict[str, Any] = {}
        if e.pos_entry and card is not None and card.pan:
            card_fields = dict(pan=card.pan, expiry=card.expiry or None,
                               pan_seq=e.pan_seq or None,
                               track2_equivalent=card.track2 or None, entry_mode=e.pos_entry)
        return self._acquirer().reversal(
            job.txn_type, keys=job.keys, stan=e.stan, batch_no=e.batch_no,
            amount_minor=e.amount_minor, reason=e.reversal_reason, original=job.original,
            **card_fields)

    def settle(self, job: SettleJob) -> Any:
        return self._acquirer().settlement(keys=job.keys, stan=job.stan, batch_no=job.batch_no,
                                           operator=job.operator, totals=job.totals)

    def upload(self, job: UploadJob) -> Any:
        return self._acquirer().batch_upload(keys=job.keys, batch_no=job.batch_no,
                                             item=job.item)

    def qr(self, job: QrJob) -> QrAnswer:
        """One request to the QR platform; a refusal and a missing answer are answers here
        (the firmware decides), only a bug raises."""
        from protocols.errors import NoResponse, ProtocolError, TransportError
        from protocols.qr import Operation
        from protocols.qrclient import QrRefused
        client = self.qr_client
        if client is None:
            return QrAnswer(comms="no QR platform configured (--qr-platform)")
        calls = {
            Operation.CREATE: lambda: client.create_order(job.out_trade_no, job.amount_minor,
                                                          job.description),
            Operation.MICROPAY: lambda: client.micropay(job.out_trade_no, job.amount_minor,
                                                        job.auth_code, job.description),
            Operation.QUERY: lambda: client.query(out_trade_no=job.out_trade_no),
            Operation.CLOSE: lambda: client.close_order(out_trade_no=job.out_trade_no),
            Operation.CANCEL: lambda: client.cancel(out_trade_no=job.out_trade_no),
        }
        try:
            return QrAnswer(order=calls[job.op]())
        except QrRefused as exc:
            return QrAnswer(order=exc.order, refused=exc.code, unknown=exc.unknown_outcome,
                            message=exc.message)
        except (NoResponse, TransportError, ProtocolError) as exc:
            return QrAnswer(comms=str(exc))

    def upload_end(self, job: UploadEndJob) -> Any:
        return self._acquirer().batch_upload_end(keys=job.keys, stan=job.stan,
                                                 batch_no=job.batch_no, count=job.count)


class TerminalRunner:
    """Runs the firmware until :meth:`stop` (thread-safe, signal-safe) or harness EOF."""

    def __init__(self, *, ecr_fd: int, harness: socket.socket, firmware: TerminalFirmware,
                 make_services: Callable[[HarnessSlot], Services],
                 clock: Callable[[], float] = time.monotonic,
                 link: ecr.EcrLink | None = None, concert_fd: int | None = None,
                 concert: ConcertPort | None = None) -> None:
        self.ecr_fd = ecr_fd
        self.concert_fd = concert_fd
        """The Concert pty master fd (None: the terminal has no Concert port)."""
        self.concert = (concert or ConcertPort(transactions=firmware.transactions)
                        if concert_fd is not None else None)
        self.harness = harness
        self.firmware = firmware
        self.clock = clock
        self.link = link or ecr.EcrLink()
        self._specs = ecr.message_specs(firmware.transactions)  # the firmware's transaction codes
        self.cl_slot = HarnessSlot(self.send_harness, messages=CONTACTLESS)
        self.slot = HarnessSlot(self.send_harness, contactless=self.cl_slot)
        self.services = make_services(self.slot)
        self._harness_lock = threading.Lock()
        self._harness_in = JsonLineBuffer("terminal harness", require="t")
        self._results: queue.Queue[JobResult] = queue.Queue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stop = False
        self._frozen = False
        self._power_off: tuple[Mapping[str, Any], float] | None = None  # notice, deadline
        self._ecr_paused_until: float | None = None
        self._concert_paused_until: float | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="terminal-job")
        self._sel = selectors.DefaultSelector()
        self._do: Mapping[type, Callable[[Any], None]] = {
            SendEcr: self._do_send_ecr, SendHarness: self._do_send_harness,
            FlushEcr: self._do_flush_ecr, StartJob: self._do_start_job,
            Freeze: self._do_freeze, PowerOff: self._do_power_off,
        }

    # ---- control
    def stop(self) -> None:
        self._stop = True
        try:
            os.write(self._wake_w, b"s")
        except (BlockingIOError, OSError):
            pass  # pipe full or closed: the loop is waking up anyway

    def send_harness(self, obj: Mapping[str, Any]) -> None:
        line = encode_line(obj)
        with self._harness_lock:
            self.harness.sendall(line)

    # ---- loop
    def run(self) -> None:
        try:
            tty.setraw(self.ecr_fd)
        except termios.error as exc:
            log.warning("terminal: ECR fd %d is not a tty (%s); using it as is", self.ecr_fd, exc)
        os.set_blocking(self.ecr_fd, False)
        self._sel.register(self.ecr_fd, selectors.EVENT_READ, self._on_ecr_readable)
        if self.concert_fd is not None:
            try:
                tty.setraw(self.concert_fd)
            except termios.error as exc:
                log.warning("terminal: Concert fd %d is not a tty (%s); using it as is",
                            self.concert_fd, exc)
            os.set_blocking(self.concert_fd, False)
            self._sel.register(self.concert_fd, selectors.EVENT_READ, self._on_concert_readable)
        self._sel.register(self.harness, selectors.EVENT_READ, self._on_harness_readable)
        self._sel.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        try:
            self._execute(self.firmware.start(self.clock()))
            while not self._stop:
                for key, _ in self._sel.select(self._select_timeout()):
                    key.data()
                    if self._stop:
                        break
                self._housekeeping()
        finally:
            self.slot.abort()
            self.cl_slot.abort()
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._sel.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _select_timeout(self) -> float:
        now = self.clock()
        times = [t for t in (self._ecr_paused_until, self._concert_paused_until)
                 if t is not None]
        if not self._frozen:
            times += [t for t in (self.link.next_deadline(), self.firmware.next_deadline(),
                                  self._power_off[1] if self._power_off else None,
                                  self.concert.next_deadline() if self.concert else None)
                      if t is not None]
        if not times:
            return IDLE_WAIT_S
        return min(IDLE_WAIT_S, max(0.0, min(times) - now))

    def _housekeeping(self) -> None:
        now = self.clock()
        if self._ecr_paused_until is not None and now >= self._ecr_paused_until:
            self._ecr_paused_until = None
            self._sel.register(self.ecr_fd, selectors.EVENT_READ, self._on_ecr_readable)
        if (self._concert_paused_until is not None and now >= self._concert_paused_until
                and self.concert_fd is not None):
            self._concert_paused_until = None
            self._sel.register(self.concert_fd, selectors.EVENT_READ, self._on_concert_readable)
        if self._frozen:
            self._drop_results()
            return
        self._link_events(self.link.poll(now))
        if self.concert is not None:
            self.concert.poll(now)
            self._flush_concert()
        while True:
            try:
                result = self._results.get_nowait()
            except queue.Empty:
                break
            self._execute(self.firmware.on_job(result, self.clock()))
        self._execute(self.firmware.tick(self.clock()))
        self._flush_link()
        if self._power_off is not None:
            notice, deadline = self._power_off
            if not self.link.busy or self.clock() >= deadline:
                if self.link.busy:
                    log.warning("terminal: powering off with ECR frames not delivered")
                log.info("terminal: powered off (%s)", notice.get("reason"))
                self.send_harness(notice)
                self._stop = True

    def _drop_results(self) -> None:
        while True:
            try:
                result = self._results.get_nowait()
            except queue.Empty:
                return
            log.info("terminal: job #%d ended while the MCU is hung: dropped", result.job_id)

    # ---- readers
    def _on_wake(self) -> None:
        try:
            os.read(self._wake_r, 512)
        except BlockingIOError:
            pass

    def _on_ecr_readable(self) -> None:
        try:
            data = os.read(self.ecr_fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            data = b""
        if not data:  # EIO/EOF: nobody has the slave open; look again a little later
            self._sel.unregister(self.ecr_fd)
            self._ecr_paused_until = self.clock() + ECR_RETRY_S
            return
        if self._frozen:
            return  # a UART nobody services: the bytes are lost, nothing is ACKed
        self._link_events(self.link.receive(data, self.clock()))

    def _on_concert_readable(self) -> None:
        assert self.concert is not None and self.concert_fd is not None
        try:
            data = os.read(self.concert_fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            data = b""
        if not data:  # nobody has the slave open; look again a little later
            self._sel.unregister(self.concert_fd)
            self._concert_paused_until = self.clock() + ECR_RETRY_S
            return
        if self._frozen:
            return  # a UART nobody services
        for request in self.concert.receive(data, self.clock()):
            log.info("terminal: Concert rx → %s", request.describe("rig", self._specs))
            actions = self.firmware.on_ecr(request, self.clock())
            self.concert.after_request([a.msg for a in actions if isinstance(a, SendEcr)],
                                       self.clock())
            self._execute(actions, observed=True)
        self._flush_concert()

    def _on_harness_readable(self) -> None:
        data = self.harness.recv(65536)
        if not data:
            log.info("terminal: harness closed by the bench; stopping")
            self._stop = True
            return
        for obj in self._harness_objects(data):
            if obj["t"] in SLOT_REPLIES:
                self.slot.deliver(obj)
            elif obj["t"] in CL_REPLIES:
                self.cl_slot.deliver(obj)
            else:
                self._execute(self.firmware.on_harness(obj, self.clock()))

    def _harness_objects(self, data: bytes) -> list[dict[str, Any]]:
        """Whole objects in *data* (with what came before); a bad line is logged (masked) and
        skipped without losing the lines around it."""
        out: list[dict[str, Any]] = []
        for item in self._harness_in.feed_each(data):
            if isinstance(item, DecodeError):
                log.error("terminal: bad harness line skipped: %s", scrub(str(item)))
            else:
                out.append(item)
        return out

    def _link_events(self, events: list[ecr.LinkEvent]) -> None:
        for ev in events:
            if isinstance(ev, ecr.Received):
                try:
                    msg = ecr.decode_message(ev.payload, "rig", self._specs)
                except DecodeError as exc:
                    log.warning("terminal: ECR request rejected: %s", exc)
                    self._execute(self.firmware.on_bad_request(str(exc)))
                    continue
                log.info("terminal: ECR rx %s", msg.describe("rig", self._specs))
                self._execute(self.firmware.on_ecr(msg, self.clock()), answering=msg.code)
            elif isinstance(ev, ecr.Failed):
                log.warning("terminal: ECR frame dropped: %s", ev.error)
            elif isinstance(ev, ecr.Rejected):
                log.warning("terminal: ECR input rejected: %s", ev.error)
        self._flush_link()

    # ---- actions
    def _execute(self, actions: list[Action], *, answering: str | None = None,
                 observed: bool = False) -> None:
        """Carry out *actions*; the Concert port sees their ECR messages first (unless
        *observed*: it has), *answering* naming the test-port request they answer."""
        if self.concert is not None and not observed:
            self.concert.observe([a.msg for a in actions if isinstance(a, SendEcr)],
                                 self.clock(), answering=answering)
        for action in actions:
            self._do[type(action)](action)
        self._flush_link()
        self._flush_concert()

    def _do_send_ecr(self, action: SendEcr) -> None:
        log.info("terminal: ECR tx %s", action.msg.describe("terminal", self._specs))
        self.link.send(ecr.encode_message(action.msg), self.clock())

    def _do_send_harness(self, action: SendHarness) -> None:
        self.send_harness(action.obj)

    def _do_flush_ecr(self, action: FlushEcr) -> None:
        try:
            termios.tcflush(self.ecr_fd, termios.TCIFLUSH)
        except termios.error:
            pass  # not a tty: draining below is enough
        while True:
            try:
                if not os.read(self.ecr_fd, 4096):
                    break
            except OSError:  # EAGAIN (empty) or EIO (no slave): nothing buffered
                break
        self.link.reset()
        if self.concert is not None and self.concert_fd is not None:
            while True:
                try:
                    if not os.read(self.concert_fd, 4096):
                        break
                except OSError:
                    break
            self.concert.reset()

    def _do_start_job(self, action: StartJob) -> None:
        log.info("terminal: job %s #%d", type(action.job).__name__, action.job.job_id)
        self._executor.submit(self._run_job, action)

    def _run_job(self, action: StartJob) -> None:
        self._results.put(perform(action.job, self.services))
        self.stop_wake()

    def stop_wake(self) -> None:
        try:
            os.write(self._wake_w, b"j")
        except (BlockingIOError, OSError):
            pass  # loop already awake or shut down

    def _do_freeze(self, action: Freeze) -> None:
        log.error("terminal: frozen: the ECR line and the firmware's timers stop until the power "
                  "is cycled")
        self._frozen = True
        self.link.reset()
        if self.concert is not None:
            self.concert.reset()

    def _do_power_off(self, action: PowerOff) -> None:
        bound = POWER_OFF_FRAMES * self.link.bound
        log.info("terminal: powering off once the ECR frames queued are out (at most %.1f s)",
                 bound)
        self._power_off = (action.notice, self.clock() + bound)

    def _flush_concert(self) -> None:
        if self.concert is None or self.concert_fd is None:
            return
        out = self.concert.take_output()
        if self._frozen:
            return
        _write_out(self.concert_fd, out, "Concert")

    def _flush_link(self) -> None:
        if self._frozen:
            self.link.take_output()
            return
        _write_out(self.ecr_fd, self.link.take_output(), "ECR")


def _write_out(fd: int, out: bytes, port: str) -> None:
    """Write *out* to a pty master: all of it, or drop the rest when the line is full (said),
    or nothing when no one has the slave open (the bytes go nowhere, as on an unplugged
    cable)."""
    while out:
        try:
            n = os.write(fd, out)
        except BlockingIOError:
            log.warning("terminal: %s output full, %d bytes dropped", port, len(out))
            return
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            return
        out = out[n:]
