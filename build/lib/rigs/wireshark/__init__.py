"""Wireshark support for the bench's captures.

``posrig_iso8583.lua`` (shipped next to this file) is a Lua dissector of the acquirer link: the
2-byte length, the TPDU, the 6-byte header and the ISO 8583 message of the bench's dialect,
every field by number, name and value, filterable as ``posrig.mti``, ``posrig.f2`` …
``posrig.f64``.  Its field table is generated from :data:`protocols.iso8583.UNIONPAY` by
``python -m rigs.wireshark --write`` (``--check`` fails when the shipped file is stale), so the
dialect has one definition.  Use it on the masked captures attached to reports
(:func:`rigs.network.capture.redact_pcap`)::

    tshark -X lua_script:rigs/wireshark/posrig_iso8583.lua -r capture.pcap -Y posrig -V
"""

from __future__ import annotations

from pathlib import Path

#: The shipped dissector (package data).
LUA_SCRIPT = Path(__file__).with_name("posrig_iso8583.lua")

__all__ = ["LUA_SCRIPT"]
