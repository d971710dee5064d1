"""The terminal's network interface as its firmware sees it: the link state (carrier) of its
PHY, read from sysfs.  Small on purpose: the terminal reads it at boot without importing the
acquirer client (:mod:`sim.terminal.acquirer` checks it before each dial)."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

from protocols.errors import SimError

SYSFS_NET = Path("/sys/class/net")

CarrierReader = Callable[[str], bool]
"""Whether a network interface has carrier (its link is up): :func:`sysfs_carrier`; a test
injects its own."""


def sysfs_carrier(ifname: str, root: Path = SYSFS_NET) -> bool:
    """The carrier of *ifname* from ``/sys/class/net/IF/carrier`` (of the calling process's
    network namespace): ``1`` up; ``0``, or EINVAL (the interface itself is down), no link.
    An interface that cannot be read (absent) is a :class:`SimError` naming the path."""
    path = root / ifname / "carrier"
    try:
        text = path.read_text().strip()
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise SimError(f"carrier of {ifname}: cannot read {path}: {exc}") from exc
    if text not in ("0", "1"):
        raise SimError(f"carrier of {ifname}: {path} holds {text!r}; expected 0 or 1")
    return text == "1"


__all__ = ["SYSFS_NET", "CarrierReader", "sysfs_carrier"]
