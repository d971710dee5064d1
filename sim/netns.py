"""The virtual bench's network: three namespaces and two veth pairs (docs/internals.md).

::

    netns dut                 netns rig                          netns acq
    term0 198.18.0.10/24 ⇄ r-term   [rig's injector]   r-host ⇄ host0 198.18.0.20/24

Nothing forwards between ``r-term`` and ``r-host`` except the rig's injector process: the rig
namespace has no bridge device and its veth ends carry no address (not even an IPv6 link-local
one, so the rig never emits a frame of its own).  ``create(topo, kernel_bridge=True)`` builds the
other lab: the terminal cabled straight to the host network, through a Linux bridge ``r-br`` in
the rig namespace (the baseline without an in-line injector; never run the injector on it).
TX checksum offload is off on ``term0`` and ``host0``, otherwise frames forwarded by a
user-space bridge carry bad checksums.

Every name is a field of :class:`Topology`, so tests build their own with a unique prefix
(:meth:`Topology.with_prefix`) and never touch the contract one.  Creation and removal shell out
to ``ip`` and ``ethtool`` with a timeout on each call; root is needed.
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from protocols.digits import ascii_digits
from protocols.errors import NoResponse, SimError

log = logging.getLogger(__name__)

IP = "ip"
ETHTOOL = "ethtool"
COMMAND_TIMEOUT_S = 10.0
"""Bound of every ``ip`` / ``ethtool`` call."""
KILL_WAIT_S = 5.0
"""Bound of the wait for SIGKILLed processes to leave a namespace."""
IFNAMSIZ = 15
NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class Topology:
    """Names and addresses of one virtual bench network."""

    dut_ns: str
    acq_ns: str
    rig_ns: str
    term_if: str
    rig_term_if: str
    host_if: str
    rig_host_if: str
    terminal_ip: str
    host_ip: str
    prefix_len: int
    bridge_if: str = "r-br"
    """The Linux bridge in the rig namespace, made only by ``create(..., kernel_bridge=True)``."""

    def __post_init__(self) -> None:
        for field_name in ("term_if", "rig_term_if", "host_if", "rig_host_if", "bridge_if"):
            value = getattr(self, field_name)
            if not value or len(value) > IFNAMSIZ or "/" in value or " " in value:
                raise SimError(
                    f"Topology: {field_name}={value!r} is not a usable interface name; expected "
                    f"1..{IFNAMSIZ} characters without '/' or spaces")
        names = (self.dut_ns, self.acq_ns, self.rig_ns)
        if len(set(names)) != 3 or any(not n or "/" in n for n in names):
            raise SimError(f"Topology: namespaces {names} must be three distinct names")

    @classmethod
    def default(cls) -> Topology:
        """The contract topology of docs/internals.md (used by the bench, never by unit tests)."""
        return cls(dut_ns="dut", acq_ns="acq", rig_ns="rig",
                   term_if="term0", rig_term_if="r-term", host_if="host0", rig_host_if="r-host",
                   terminal_ip="198.18.0.10", host_ip="198.18.0.20", prefix_len=24)

    @classmethod
    def with_prefix(cls, prefix: str) -> Topology:
        """A test topology: every namespace and interface name starts with *prefix*.

        Interface names are ``{prefix}t0``, ``{prefix}rt``, ``{prefix}h0``, ``{prefix}rh`` (and
        the kernel bridge ``{prefix}br``), so the prefix may have up to 13 characters.  Addresses
        are the contract ones: they only exist inside the namespaces, so several topologies never
        collide.
        """
        if not prefix:
            raise SimError("Topology.with_prefix(''): a test prefix must be non-empty (an empty "
                           "one would give the integration run's namespace names)")
        base = cls.default()
        return cls(dut_ns=f"{prefix}dut", acq_ns=f"{prefix}acq", rig_ns=f"{prefix}rig",
                   term_if=f"{prefix}t0", rig_term_if=f"{prefix}rt",
                   host_if=f"{prefix}h0", rig_host_if=f"{prefix}rh",
                   terminal_ip=base.terminal_ip, host_ip=base.host_ip,
                   prefix_len=base.prefix_len, bridge_if=f"{prefix}br")

    @property
    def namespaces(self) -> tuple[str, str, str]:
        return (self.dut_ns, self.acq_ns, self.rig_ns)

    @property
    def links(self) -> tuple[tuple[str, str], ...]:
        """(namespace, interface) of every veth end."""
        return ((self.dut_ns, self.term_if), (self.rig_ns, self.rig_term_if),
                (self.acq_ns, self.host_if), (self.rig_ns, self.rig_host_if))


def _require_root(operation: str) -> None:
    euid = os.geteuid()
    if euid != 0:
        raise SimError(f"netns: {operation}() needs root to manage network namespaces; "
                       f"running as euid {euid}")


def _run(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one ``ip``/``ethtool`` command, bounded; a failure names the command and its stderr."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise SimError(f"netns: `{' '.join(argv)}` did not finish within "
                       f"{COMMAND_TIMEOUT_S:.0f} s") from exc
    except FileNotFoundError as exc:
        raise SimError(f"netns: `{' '.join(argv)}` cannot run: {argv[0]} is not installed") from exc
    if check and done.returncode != 0:
        raise SimError(f"netns: `{' '.join(argv)}` failed with exit code {done.returncode}: "
                       f"{done.stderr.strip() or '(no stderr)'}")
    return done


def _namespaces_present() -> set[str]:
    done = _run([IP, "netns", "list"])
    # lines look like "dut" or "dut (id: 3)"
    return {line.split()[0] for line in done.stdout.splitlines() if line.strip()}


def _link_present(ns: str | None, ifname: str) -> bool:
    argv = [IP] + (["-n", ns] if ns else []) + ["link", "show", "dev", ifname]
    return _run(argv, check=False).returncode == 0


def leftovers(topo: Topology) -> list[str]:
    """What of *topo* exists now (namespaces, and veth ends left in the root namespace)."""
    _require_root("leftovers")
    present = _namespaces_present()
    found = [f"netns {ns}" for ns in topo.namespaces if ns in present]
    found += [f"link {ifname} (root namespace)" for _, ifname in topo.links
              if _link_present(None, ifname)]
    return found


def exists(topo: Topology) -> bool:
    """True when the whole topology is there: three namespaces and the four veth ends in them."""
    _require_root("exists")
    present = _namespaces_present()
    if not all(ns in present for ns in topo.namespaces):
        return False
    return all(_link_present(ns, ifname) for ns, ifname in topo.links)


def has_kernel_bridge(topo: Topology) -> bool:
    """Whether the rig namespace holds *topo*'s kernel bridge (a kernel path terminal ⇄ host)."""
    _require_root("has_kernel_bridge")
    return topo.rig_ns in _namespaces_present() and _link_present(topo.rig_ns, topo.bridge_if)


def create(topo: Topology, *, kernel_bridge: bool = False) -> None:
    """Create *topo*.  Leftovers of an earlier run are removed first (with a warning); on a
    partial failure what was made is removed again and :class:`SimError` names the command.

    With *kernel_bridge*, the rig's two veth ends are also enslaved to a Linux bridge
    (``topo.bridge_if``: STP off, forward delay 0, no IPv6 link-local address): the terminal is
    cabled straight to the host network, as in a lab without an in-line injector.  The rig's
    injector must not run on such a topology (every frame would cross twice)."""
    _require_root("create")
    stale = leftovers(topo)
    if stale:
        log.warning("netns: leftovers of an earlier bench found (%s); removing them first",
                    ", ".join(stale))
        destroy(topo)
    try:
        _build(topo)
        if kernel_bridge:
            _build_kernel_bridge(topo)
    except SimError:
        log.error("netns: creating %s failed; removing what was made", topo.namespaces)
        try:
            destroy(topo)
        except SimError as cleanup_error:
            log.error("netns: cleanup after failed create also failed: %s", cleanup_error)
        raise
    log.info("netns: created %s/%s/%s (%s ⇄ %s, %s ⇄ %s)%s", *topo.namespaces,
             topo.term_if, topo.rig_term_if, topo.host_if, topo.rig_host_if,
             f" with kernel bridge {topo.bridge_if}" if kernel_bridge else "")


def _build(topo: Topology) -> None:
    for ns in topo.namespaces:
        _run([IP, "netns", "add", ns])
        _run([IP, "-n", ns, "link", "set", "lo", "up"])
    pairs = ((topo.dut_ns, topo.term_if, topo.rig_term_if),
             (topo.acq_ns, topo.host_if, topo.rig_host_if))
    for ns, end, rig_end in pairs:
        # Both ends are created directly inside their namespaces: nothing appears in the root one.
        _run([IP, "link", "add", end, "netns", ns, "type", "veth",
              "peer", "name", rig_end, "netns", topo.rig_ns])
        # The rig's ends are silent: no IPv6 link-local address, hence no DAD/RS/MLD frames.
        _run([IP, "-n", topo.rig_ns, "link", "set", rig_end, "addrgenmode", "none"])
        _run([IP, "-n", topo.rig_ns, "link", "set", rig_end, "up"])
    for ns, end, addr in ((topo.dut_ns, topo.term_if, topo.terminal_ip),
                          (topo.acq_ns, topo.host_if, topo.host_ip)):
        _run([IP, "-n", ns, "addr", "add", f"{addr}/{topo.prefix_len}", "dev", end])
        _run([IP, "netns", "exec", ns, ETHTOOL, "-K", end, "tx", "off"])
        _run([IP, "-n", ns, "link", "set", end, "up"])


def _build_kernel_bridge(topo: Topology) -> None:
    rig = [IP, "-n", topo.rig_ns, "link"]
    _run([*rig, "add", "name", topo.bridge_if, "type", "bridge", "stp_state", "0",
          "forward_delay", "0"])
    # silent like the veth ends: no IPv6 link-local address, so it emits no frame of its own
    _run([*rig, "set", topo.bridge_if, "addrgenmode", "none"])
    for end in (topo.rig_term_if, topo.rig_host_if):
        _run([*rig, "set", end, "master", topo.bridge_if])
    _run([*rig, "set", topo.bridge_if, "up"])


def _pids_in(ns: str) -> list[int]:
    done = _run([IP, "netns", "pids", ns], check=False)
    if done.returncode != 0:
        return []
    return [int(tok) for tok in done.stdout.split() if ascii_digits(tok)]


def _wait_gone(pids: list[int], bound_s: float) -> list[int]:
    """Wait (pidfd + poll, bounded) for *pids* to exit; return the ones still alive."""
    poller = select.poll()
    fds: dict[int, int] = {}
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        fds[fd] = pid
        poller.register(fd, select.POLLIN)
    remaining = dict(fds)
    deadline = time.monotonic() + bound_s
    try:
        while remaining:
            left_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
            events = poller.poll(left_ms)
            if not events:
                break
            for fd, _ in events:
                poller.unregister(fd)
                remaining.pop(fd, None)
    finally:
        for fd in fds:
            os.close(fd)
    return sorted(remaining.values())


def destroy(topo: Topology) -> list[str]:
    """Remove *topo*; processes still inside its namespaces (started by the bench) are SIGKILLed
    first.  Returns what was killed and removed, for the "cleaned up" message."""
    _require_root("destroy")
    done: list[str] = []
    present = _namespaces_present()
    for ns in topo.namespaces:
        if ns not in present:
            continue
        pids = [pid for pid in _pids_in(ns) if pid != os.getpid()]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                done.append(f"killed pid {pid} in netns {ns}")
            except ProcessLookupError:
                pass
        alive = _wait_gone(pids, KILL_WAIT_S)
        if alive:
            raise NoResponse(f"netns: destroy(): pids {alive} in netns {ns} still alive "
                             f"{KILL_WAIT_S:.0f} s after SIGKILL")
        _run([IP, "netns", "del", ns])
        done.append(f"deleted netns {ns}")
    for _, ifname in topo.links:
        if _link_present(None, ifname):
            _run([IP, "link", "del", "dev", ifname])
            done.append(f"deleted link {ifname} (root namespace)")
    if done:
        log.info("netns: cleaned up: %s", "; ".join(done))
    return done


def netns_socket(ns: str, family: int = socket.AF_INET,
                 kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket created inside network namespace *ns* (it stays there whichever thread uses it).

    A short-lived thread enters the namespace with ``setns`` (namespaces are per thread), makes
    the socket and ends; the calling thread never changes namespace.
    """
    path = NETNS_DIR / ns
    result: list[socket.socket | BaseException] = []

    def enter_and_make() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise SimError(f"netns: setns({path}) failed: {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(socket.socket(family, kind))
        except (OSError, SimError) as exc:
            result.append(exc)

    worker = threading.Thread(target=enter_and_make, name=f"netns-{ns}", daemon=True)
    worker.start()
    worker.join(COMMAND_TIMEOUT_S)
    if worker.is_alive() or not result:
        raise NoResponse(f"netns: making a socket in {ns} took more than {COMMAND_TIMEOUT_S:.0f} s")
    made = result[0]
    if isinstance(made, BaseException):
        raise SimError(f"netns: cannot make a socket in netns {ns}: {made}") from made
    return made
