"""Captures safe to attach: frames kept, application payload blanked.

What crosses between terminal and acquirer carries the full PAN, track-2 data and the PIN block
(ISO 8583 fields 2, 35, 52).  The pcap attached to a report keeps every frame, its timing, its
addresses, TCP flags, sequence numbers and lengths (what shows a pulled cable, a retransmission
or a reset) but replaces the bytes of every TCP/UDP payload with zeros.  The decoded, masked
messages are attached next to it (:func:`rigs.host.decode_pcap`).
"""

from __future__ import annotations

from pathlib import Path

from rigs.errors import RigError


def redact_pcap(src: Path, dst: Path) -> int:
    """Write *dst*: *src* with every TCP/UDP payload zeroed (checksums recomputed).

    Returns how many frames had payload blanked.  The raw capture is not kept by the caller.
    """
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.packet import Raw
    from scapy.utils import PcapReader, PcapWriter

    blanked = 0
    try:
        with PcapReader(str(src)) as reader, PcapWriter(str(dst), sync=False) as writer:
            for pkt in reader:
                if pkt.haslayer(Raw) and (pkt.haslayer(TCP) or pkt.haslayer(UDP)):
                    raw = pkt[Raw]
                    raw.load = bytes(len(raw.load))
                    for layer in (TCP, UDP, IP):
                        if pkt.haslayer(layer):
                            del pkt[layer].chksum
                    blanked += 1
                    pkt = pkt.__class__(bytes(pkt))  # rebuild with the new checksums
                writer.write(pkt)
    except (OSError, ValueError) as exc:
        raise RigError(f"cannot redact capture {src} → {dst}: {exc}") from exc
    return blanked
