"""A bench file that names a labgrid place instead of local resources: the bench of a farm.

Across bench PCs the rig does not schedule anything itself: a labgrid coordinator knows the
places (one per bench), their tags and the resources the bench PCs' exporters publish.  A bench
file may carry a ``labgrid:`` section; the rig then reserves and acquires a place, fills the
bench file's ports and VISA resources from the place's resources, and releases the place when
the run ends — on an exception, Ctrl-C (KeyboardInterrupt) and SIGTERM too::

    labgrid:
      coordinator: farm-coordinator:20408   # default: $LG_COORDINATOR, else 127.0.0.1:20408
      tags: {bench: pos, terminal: move5000}  # or: place: pos-bench-3 (exactly one of them)
      acquire_timeout: 1800                 # s: bound of the wait for a free place
      resources:                            # bench key ← resource of the place (its name)
        terminal.port: terminal             # NetworkSerialPort → rfc2217://host:port / socket://
        cards.probe: probe
        power.resource: psu                 # PyVISADevice → TCPIP0::host::5025::SOCKET
        switch.resource: {name: relay, cls: PyVISADevice}
    terminal:                               # the rest of the bench file, as for a local bench,
      terminal_id: "10000001"               # without the keys the place provides
      …

What maps to what (:data:`MAPPERS`, a dispatch table by the resource's class):

* ``NetworkSerialPort`` (an exporter's ``RawSerialPort`` / ``USBSerialPort`` behind ser2net,
  or a ser2net port declared as is) → ``terminal.port`` / ``cards.probe``: protocol ``rfc2217``
  → ``rfc2217://host:port?ign_set_control``, ``raw`` → ``socket://host:port`` (the
  :mod:`rigs.transport` grammar).
* ``PyVISADevice`` → ``power.resource`` / ``switch.resource``: ``{type}::{url}``, with
  ``::INSTR`` appended when the url names no resource class (as labgrid's own driver does), so
  ``type: TCPIP0, url: 198.18.3.10::5025::SOCKET`` is ``TCPIP0::198.18.3.10::5025::SOCKET``.
* ``NetworkPowerPort`` with ``model: siglent`` (labgrid's Siglent SPD backend, VXI-11) →
  ``power.resource`` ``TCPIP0::host::INSTR``, ``power.channel`` = its index and ``power.dialect``
  ``siglent-spd``.  Other models switch an outlet on and off: not a SCPI supply, refused.
* Anything else the place holds is listed in :attr:`PlaceLease.unused` with why, and a mapping
  the place cannot satisfy is an error naming the coordinator, place, resource and what was
  expected.

The client is labgrid's own, in this process: :class:`labgrid.remote.client.ClientSession` (the
class labgrid's ``RemotePlace`` uses) on a private asyncio loop in a thread of its own, and the
coordinator's gRPC calls (CreateReservation, PollReservation, AcquirePlace, ReleasePlace,
CancelReservation) on its stub.  Every call is bounded; labgrid's and gRPC's exceptions are
turned into the rig's (:class:`ConfigError`, :class:`NoResponse`, :class:`TransportError`,
:class:`DeviceStateError`) at this boundary.  Both ways of asking for a place go through a
reservation (a place by name is the filter ``name=<place>``), so waiting benches queue fairly
in the coordinator's scheduler instead of polling ``acquire``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import enum
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType, MappingProxyType, TracebackType
from typing import Annotated, Any, Literal, Protocol, TypeVar, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from protocols.yamlmodel import parse_hostport, read_yaml, validate_model
from rigs.config import WHAT, BenchConfig, parse_bench
from rigs.errors import ConfigError, DeviceStateError, NoResponse, RigError, TransportError
from rigs.scpi import resource_error
from rigs.transport import serial_url_error

log = logging.getLogger(__name__)

SECTION = "labgrid"
DEFAULT_PORT = 20408
"""labgrid's coordinator port (``labgrid-coordinator --listen``, ``LG_COORDINATOR``)."""
FALLBACK_COORDINATOR = f"127.0.0.1:{DEFAULT_PORT}"
POLL_S = 0.5
"""Reservation poll period (s).  A waiting reservation nobody polls expires after 60 s."""
READY_POLL_S = 0.1
LABGRID_MISSING = ("the bench file has a labgrid section, but labgrid is not installed in this "
                   "Python (pip install 'labgrid>=26,<27')")

T = TypeVar("T")

# -- the bench file's labgrid section --------------------------------------------------------

TargetKey = Literal["terminal.port", "cards.probe", "power.resource", "switch.resource"]
"""The bench keys a place's resources can fill."""


class PartKind(enum.Enum):
    SERIAL = "a serial port URL (rfc2217://host:port or socket://host:port)"
    VISA = "a VISA resource string (TCPIP0::host::port::SOCKET or TCPIP0::host::INSTR)"


TARGETS: Mapping[str, PartKind] = MappingProxyType({
    key: PartKind.SERIAL if key in ("terminal.port", "cards.probe") else PartKind.VISA
    for key in get_args(TargetKey)
})

# labgrid.remote.common.TAG_KEY: the coordinator refuses any other tag key.  Values are compared
# as written; the rig refuses only what labgrid-client set-tags could not have written.
_TAG_KEY_RE = re.compile(r"[a-z][a-z0-9_]+")
_TAG_VALUE_RE = re.compile(r"[^\s=]+")
_PLACE_RE = re.compile(r"[^\s/+]+")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _name_shorthand(value: object) -> object:
    return {"name": value} if isinstance(value, str) else value


class ResourceRef(_Section):
    """Which resource of the place fills a bench key: its name, its class, or both."""

    name: str | None = Field(None, description=(
        "The resource's name as the place shows it: a named match's name, else the "
        "exporter's resource name (labgrid-client -p PLACE show)."))
    cls: str | None = Field(None, description=(
        "The resource class as the coordinator lists it (NetworkSerialPort, PyVISADevice, "
        "NetworkPowerPort); an exporter's RawSerialPort is listed as NetworkSerialPort."))

    @model_validator(mode="after")
    def _something(self) -> ResourceRef:
        if self.name is None and self.cls is None:
            raise ValueError("give the resource's name, its class (cls), or both")
        return self

    def matches(self, resource: ResourceView) -> bool:
        return ((self.name is None or self.name == resource.name)
                and (self.cls is None or self.cls == resource.cls))

    def __str__(self) -> str:
        if self.name is not None and self.cls is not None:
            return f"'{self.name}' ({self.cls})"
        return f"'{self.name}'" if self.name is not None else f"of class {self.cls}"


Ref = Annotated[ResourceRef, BeforeValidator(_name_shorthand)]


def _default_coordinator() -> str:
    return os.environ.get("LG_COORDINATOR") or FALLBACK_COORDINATOR


class LabgridConfig(_Section):
    """The ``labgrid:`` section of a bench file."""

    coordinator: str = Field(default_factory=_default_coordinator, validate_default=True,
                             description=f"host:port of the labgrid coordinator (port default "
                                         f"{DEFAULT_PORT}); default: $LG_COORDINATOR, else "
                                         f"{FALLBACK_COORDINATOR}.")
    place: str | None = Field(None, description="Acquire this place (by its name).")
    tags: dict[str, str] | None = Field(None, description=(
        "Reserve any place that has all these tags (labgrid-client set-tags)."))
    priority: float = Field(0.0, description="Reservation priority: higher is served first.")
    acquire_timeout: float = Field(600.0, gt=0, le=7 * 86400, description=(
        "Bound of the wait for the place (s): queued behind other users, then refused."))
    connect_timeout: float = Field(10.0, gt=0, le=300, description=(
        "Bound of reaching the coordinator and of each request to it (s)."))
    ready_timeout: float = Field(15.0, gt=0, le=600, description=(
        "Bound, once the place is acquired, of its resources being published and available "
        "(an exporter starts ser2net on acquire) (s)."))
    resources: dict[TargetKey, Ref] = Field(default_factory=dict, description=(
        "Bench key → the place's resource that fills it.  Empty: the place is only a lock, the "
        "bench file names every port itself."))

    @field_validator("coordinator", mode="before")
    @classmethod
    def _coordinator(cls, value: object) -> object:
        if isinstance(value, str) and value and ":" not in value:
            value = f"{value}:{DEFAULT_PORT}"
        try:
            parse_hostport(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a coordinator address; expected host:port, e.g. "
                             f"farm-coordinator:{DEFAULT_PORT} (labgrid >= 24 speaks gRPC, "
                             f"no ws:// URL)") from None
        return value

    @field_validator("place")
    @classmethod
    def _place_name(cls, value: str | None) -> str | None:
        if value is not None and not _PLACE_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not a place name (no spaces, '/' or '+')")
        return value

    @field_validator("tags")
    @classmethod
    def _tag_grammar(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("give at least one tag (key: value)")
        for key, tag in value.items():
            if not _TAG_KEY_RE.fullmatch(key):
                raise ValueError(f"tag key {key!r}: expected lower-case letters, digits and _, "
                                 f"starting with a letter, 2 characters at least (labgrid's "
                                 f"rule)")
            if not _TAG_VALUE_RE.fullmatch(tag):
                raise ValueError(f"tag {key}: value {tag!r} must be non-empty, without spaces "
                                 f"or '='")
        return value

    @model_validator(mode="after")
    def _one_way(self) -> LabgridConfig:
        if (self.place is None) == (self.tags is None):
            raise ValueError("give the place to acquire (place: name) or the tags of the places "
                             "that will do (tags: {key: value}), exactly one of them")
        return self

    @property
    def filters(self) -> dict[str, str]:
        """The reservation filter: the tags, or labgrid's ``name=<place>``."""
        return dict(self.tags) if self.tags is not None else {"name": str(self.place)}

    @property
    def wanted(self) -> str:
        """``place 'pos-3'`` or ``a place tagged bench=pos, terminal=move5000``."""
        if self.place is not None:
            return f"place '{self.place}'"
        return "a place tagged " + ", ".join(f"{k}={v}" for k, v in sorted(self.filters.items()))


class _Holder(BaseModel):
    """Validates the section under its key, so errors read ``labgrid.tags.x: …``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    labgrid: LabgridConfig


@dataclass(frozen=True)
class FarmBench:
    """A bench file split in two: the ``labgrid`` section, and the rest of the document."""

    source: str
    labgrid: LabgridConfig | None
    document: Mapping[str, Any]

    def local_config(self) -> BenchConfig:
        """The bench of a file without a labgrid section (what :func:`rigs.config.load_bench`
        reads)."""
        if self.labgrid is not None:
            raise ConfigError(f"{self.source}: the bench names a labgrid place; its ports are "
                              f"known once the place is acquired (PlaceLease)")
        return parse_bench(dict(self.document), self.source)


_PLACEHOLDER = {PartKind.SERIAL: "socket://labgrid-place.invalid:1",
                PartKind.VISA: "TCPIP0::labgrid-place.invalid::5025::SOCKET"}


def split_bench(data: Any, source: str) -> FarmBench:
    """Validate a loaded bench document that may carry a ``labgrid`` section.

    Everything is checked before any coordinator is asked: the section itself, that no key is
    given twice (in the file and from the place), and the rest of the bench file with stand-ins
    for the keys the place will fill.
    """
    if not isinstance(data, dict) or SECTION not in data:
        parse_bench(data, source)  # a local bench: checked as load_bench checks it
        return FarmBench(source, None, MappingProxyType(copy.deepcopy(data)))
    section = validate_model(_Holder, {SECTION: data[SECTION]}, source, what=WHAT).labgrid
    rest = copy.deepcopy({key: value for key, value in data.items() if key != SECTION})
    for target in section.resources:
        part, key = target.split(".")
        written = rest.get(part)
        if isinstance(written, dict) and key in written:
            raise ConfigError(f"{source}: {target} is written in the file and "
                              f"{SECTION}.resources.{target} takes it from the place too; keep "
                              f"one of them")
    parse_bench(_filled(rest, {t: _PLACEHOLDER[TARGETS[t]] for t in section.resources}), source)
    return FarmBench(source, section, MappingProxyType(rest))


def read_farm_bench(path: str | Path) -> FarmBench:
    """Read a bench file that may name a labgrid place (see :func:`split_bench`)."""
    return split_bench(read_yaml(path, what=WHAT), str(path))


def _filled(document: Mapping[str, Any], values: Mapping[str, object]) -> dict[str, Any]:
    """A copy of *document* with ``part.key`` values set (a missing section is created)."""
    out = copy.deepcopy(dict(document))
    for dotted, value in values.items():
        part, key = dotted.split(".")
        section = out.get(part)
        if section is None:
            section = out[part] = {}
        if isinstance(section, dict):  # anything else: parse_bench names it
            section[key] = value
    return out


# -- what the coordinator says, parsed once at the boundary ----------------------------------

@dataclass(frozen=True)
class ResourceView:
    """A resource as the coordinator publishes it for a place."""

    exporter: str
    group: str
    cls: str
    resource: str  # the exporter's resource name
    name: str  # as the place names it: a named match's name, else the resource name
    params: Mapping[str, Any]
    extra: Mapping[str, Any]
    avail: bool
    acquired: str | None  # the place holding it
    present: bool = True  # False: the place lists it, but its exporter is gone

    @property
    def path(self) -> str:
        return f"{self.exporter}/{self.group}/{self.cls}/{self.resource}"

    def __str__(self) -> str:
        named = f"'{self.name}' " if self.name != self.resource else ""
        return f"{named}{self.path}"


@dataclass(frozen=True)
class PlaceView:
    name: str
    tags: Mapping[str, str]
    matches: tuple[str, ...]
    acquired: str | None  # "host/user"
    reservation: str | None
    changed: float

    def fits(self, filters: Mapping[str, str]) -> bool:
        """Whether the coordinator's scheduler would allocate this place for *filters*."""
        have = {**self.tags, "name": self.name}
        return all(have.get(key) == value for key, value in filters.items())

    def holder(self) -> str:
        if self.acquired:
            since = datetime.fromtimestamp(self.changed).strftime("%Y-%m-%d %H:%M:%S")
            return f"acquired by {self.acquired} since {since}"
        if self.reservation:
            return f"allocated to reservation {self.reservation}"
        return "free"

    def describe(self) -> str:
        tags = ", ".join(f"{k}={v}" for k, v in sorted(self.tags.items())) or "no tags"
        return f"{self.name} ({tags}; {self.holder()})"


@dataclass(frozen=True)
class PlaceState:
    """A place with the resources the coordinator lists for it."""

    place: PlaceView
    resources: tuple[ResourceView, ...]
    exporters: frozenset[str]  # exporters connected to the coordinator


class ReservationState(enum.Enum):
    """labgrid.remote.common.ReservationState, by name."""

    WAITING = "waiting"
    ALLOCATED = "allocated"
    ACQUIRED = "acquired"
    EXPIRED = "expired"
    INVALID = "invalid"


@dataclass(frozen=True)
class ReservationView:
    token: str
    state: ReservationState
    place: str | None
    owner: str


# -- resources → bench keys ------------------------------------------------------------------

class NotReady(RigError):
    """A resource the bench needs is not (yet) published or available; waited for, bounded."""


@dataclass(frozen=True)
class MappedResource:
    target: str
    value: str
    resource: ResourceView

    def __str__(self) -> str:
        return f"{self.target} = {self.value} (from {self.resource})"


@dataclass(frozen=True)
class Resolution:
    config: BenchConfig
    mapped: tuple[MappedResource, ...]
    unused: tuple[str, ...]


Mapped = tuple[str, Mapping[str, object]]
"""The bench key's value, and other keys of the same section it implies."""
Mapper = Callable[[ResourceView, str, str], Mapped]


def _host(res: ResourceView, where: str) -> str:
    if res.extra.get("proxy_required"):
        raise ConfigError(f"{where}: {res} is exported by an isolated exporter "
                          f"(labgrid-exporter --isolated): it is reachable only through an SSH "
                          f"proxy ({res.extra.get('proxy')}), which the rig does not set up; "
                          f"run that exporter without --isolated")
    host = res.params.get("host")
    if not isinstance(host, str) or not host:
        raise ConfigError(f"{where}: {res} names no host (params {dict(res.params)})")
    return host


_SERIAL_URLS = {"rfc2217": "rfc2217://{host}:{port}?ign_set_control", "raw": "socket://{host}:{port}"}
"""NetworkSerialPort protocol → URL.  ``ign_set_control``: ser2net acknowledges a modem-line
change only where the port has modem lines, so the client must not wait for it (labgrid's own
SerialDriver opens its ports the same way)."""


def _serial_url(res: ResourceView, target: str, where: str) -> Mapped:
    host = _host(res, where)
    port = res.params.get("port")
    if port is None:
        raise NotReady(f"{where}: {res} has no TCP port yet (an exporter starts ser2net for a "
                       f"serial port when the place is acquired)")
    protocol = str(res.params.get("protocol", "rfc2217"))
    form = _SERIAL_URLS.get(protocol)
    if form is None:
        raise ConfigError(f"{where}: {res} has protocol {protocol!r}; {target} can use "
                          f"{' or '.join(sorted(_SERIAL_URLS))}")
    url = form.format(host=host, port=port)
    why = serial_url_error(url)
    if why is not None:
        raise ConfigError(f"{where}: {res} does not make a serial port URL: {why}")
    return url, {}


_VISA_CLASS_RE = re.compile(r"::(?:INSTR|SOCKET|RAW)$", re.IGNORECASE)


def _visa_checked(text: str, res: ResourceView, where: str) -> str:
    why = resource_error(text)
    if why is not None:
        raise ConfigError(f"{where}: {res} (params {dict(res.params)}) gives {why}")
    return text


def _pyvisa_resource(res: ResourceView, target: str, where: str) -> Mapped:
    kind, url = res.params.get("type"), res.params.get("url")
    backend = str(res.params.get("backend") or "")
    if backend not in ("", "@py"):
        raise ConfigError(f"{where}: {res} asks for the VISA backend {backend!r}; the rig "
                          f"opens instruments with pyvisa-py ('@py')")
    text = f"{kind}::{url}"
    if not _VISA_CLASS_RE.search(text):
        text += "::INSTR"  # labgrid's PyVISADriver appends it the same way
    return _visa_checked(text, res, where), {}


def _power_port_resource(res: ResourceView, target: str, where: str) -> Mapped:
    model = res.params.get("model")
    if target != "power.resource" or model != "siglent":
        raise ConfigError(f"{where}: {res} is a NetworkPowerPort of model {model!r}, an outlet "
                          f"switched on and off; {target} needs a SCPI instrument: export it as "
                          f"a PyVISADevice (type: TCPIP0, url: <ip>::5025::SOCKET)"
                          + (", or a Siglent SPD supply as a NetworkPowerPort with model: "
                             "siglent" if target == "power.resource" else ""))
    host = str(res.params.get("host", ""))
    text = _visa_checked(f"TCPIP0::{host}::INSTR", res, where)  # labgrid's siglent: VXI-11
    return text, {"channel": int(res.params.get("index", 1)), "dialect": "siglent-spd"}


MAPPERS: Mapping[PartKind, Mapping[str, Mapper]] = MappingProxyType({
    PartKind.SERIAL: MappingProxyType({"NetworkSerialPort": _serial_url}),
    PartKind.VISA: MappingProxyType({"PyVISADevice": _pyvisa_resource,
                                     "NetworkPowerPort": _power_port_resource}),
})
"""Bench part kind → labgrid resource class → how it becomes the bench key's value."""

UNUSED_HINTS: Mapping[str, str] = MappingProxyType({
    "NetworkService": "a host the rig does not reach through labgrid (the PC/SC readers and the "
                      "injector's NICs are used where the job runs: run it on that host)",
    "NetworkPowerPort": "a switched outlet; the rig's power part is a SCPI supply",
    "NetworkSerialPort": "a serial port no bench key names",
    "PyVISADevice": "an instrument no bench key names",
})


def _pick(ref: ResourceRef, target: str, state: PlaceState, where: str) -> ResourceView:
    found = [res for res in state.resources if ref.matches(res)]
    if len(found) > 1:
        raise ConfigError(f"{where}: {SECTION}.resources.{target} matches {len(found)} resources "
                          f"({', '.join(str(r) for r in found)}); name one (name: and cls:)")
    if not found:
        if state.resources:
            has = "it has " + ", ".join(f"'{r.name}' ({r.cls})" for r in state.resources)
        else:
            down = sorted({m.split("/")[0] for m in state.place.matches} - state.exporters)
            has = (f"it has no resources: none of its matches ({', '.join(state.place.matches) or 'none'}) "
                   f"is published" + (f"; exporter {', '.join(down)} is not connected (exporter "
                                      f"down?)" if down else ""))
        raise NotReady(f"{where}: no resource {ref} for {target}; {has}")
    res = found[0]
    if not res.present:
        raise NotReady(f"{where}: {res} (for {target}) is gone: its exporter '{res.exporter}' is "
                       f"not connected to the coordinator (exporter down?)")
    if not res.avail:
        raise NotReady(f"{where}: {res} (for {target}) is not available: its exporter does not "
                       f"see the device")
    return res


def resolve(farm: FarmBench, state: PlaceState) -> Resolution:
    """The complete bench of *farm* on the acquired place *state* (a pure function).

    Raises :class:`NotReady` for what may still come (a resource not yet published, a port
    not yet known) and :class:`ConfigError` for what will not (a class that cannot fill the
    key, two resources for one key, a value contradicting the file).
    """
    lg = farm.labgrid
    if lg is None:
        raise ConfigError(f"{farm.source}: no {SECTION} section")
    where = f"labgrid coordinator {lg.coordinator}, place '{state.place.name}'"
    values: dict[str, object] = {}
    mapped: list[MappedResource] = []
    used: set[str] = set()
    for target, ref in lg.resources.items():
        kind = TARGETS[target]
        res = _pick(ref, target, state, where)
        mapper = MAPPERS[kind].get(res.cls)
        if mapper is None:
            raise ConfigError(f"{where}: {res} cannot fill {target}: {target} is {kind.value}, "
                              f"made from {' or '.join(sorted(MAPPERS[kind]))}, not {res.cls}")
        value, implied = mapper(res, target, where)
        part = target.split(".")[0]
        section = farm.document.get(part)
        for key, implied_value in implied.items():
            written = section.get(key) if isinstance(section, dict) else None
            if written is not None and written != implied_value:
                raise ConfigError(f"{farm.source}: {part}.{key} is {written!r}, but {res} (for "
                                  f"{target}) implies {implied_value!r}; fix the file or the "
                                  f"mapping")
            values[f"{part}.{key}"] = implied_value
        values[target] = value
        mapped.append(MappedResource(target, value, res))
        used.add(res.path)
    unused = tuple(f"{res}: not used — {UNUSED_HINTS.get(res.cls, 'no bench key names it')}"
                   for res in state.resources if res.path not in used)
    config = parse_bench(_filled(farm.document, values),
                         f"{farm.source} (with place '{state.place.name}')")
    return Resolution(config, tuple(mapped), unused)


# -- the coordinator -------------------------------------------------------------------------

class CoordinatorSession:
    """One connection to a labgrid coordinator: labgrid's ``ClientSession`` on a private event
    loop in a thread of its own, every request bounded by *timeout*.  Nothing is opened in
    ``__init__``."""

    def __init__(self, address: str, *, timeout: float = 10.0) -> None:
        self.address = address
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._lg: Any = None  # the labgrid modules, imported on open()

    def __repr__(self) -> str:
        return f"CoordinatorSession({self.address})"

    @property
    def is_open(self) -> bool:
        return self._client is not None

    @property
    def identity(self) -> str:
        """``host/user`` as the coordinator records who acquired a place (``LG_HOSTNAME``,
        ``LG_USERNAME`` override them, as for labgrid-client)."""
        self._require_open("identity")
        return f"{self._client.gethostname()}/{self._client.getuser()}"

    def _require_open(self, operation: str) -> None:
        if self._client is None:
            raise DeviceStateError(f"{self!r}: {operation}() needs an open session; state is "
                                   f"CLOSED")

    def open(self) -> None:
        if self._client is not None:
            return
        self._lg = _import_labgrid()
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=f"labgrid {self.address}",
                                  daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self._client = self._run(self._start(), "connect")
        except BaseException:
            self._stop_loop()
            raise
        log.info("connected to labgrid coordinator %s as %s", self.address, self.identity)

    async def _start(self) -> Any:
        client = self._lg.client.ClientSession(self.address, asyncio.get_running_loop())
        try:
            await client.start()
        except BaseException:
            await self._shutdown(client)
            raise
        return client

    @staticmethod
    async def _shutdown(client: Any) -> None:
        if not client.stopping.is_set():
            await client.stop()
        await client.close()

    def close(self) -> None:
        """Disconnect (bounded); idempotent."""
        client, self._client = self._client, None
        try:
            if client is not None and self._loop is not None:
                self._run(self._shutdown(client), "disconnect", shield=True)
        except RigError as exc:
            log.warning("%r: %s", self, exc)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None:
            return
        if loop.is_running():
            drained = asyncio.run_coroutine_threadsafe(_cancel_tasks(), loop)
            try:
                drained.result(timeout=self.timeout)
            except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
                log.warning("%r: labgrid client tasks did not stop within %g s", self,
                            self.timeout)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(self.timeout)
        if thread is None or not thread.is_alive():
            loop.close()

    def _run(self, coro: Coroutine[Any, Any, T], what: str, *, shield: bool = False) -> T:
        """Run *coro* on the session's loop, bounded by :attr:`timeout`.  With *shield*, a
        KeyboardInterrupt (Ctrl-C, SIGTERM) waits for the request to finish first."""
        if self._loop is None:
            coro.close()
            raise DeviceStateError(f"{self!r}: {what} needs an open session; state is CLOSED")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        deadline = time.monotonic() + self.timeout
        interrupted: BaseException | None = None
        while not future.done():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                concurrent.futures.wait([future], timeout=left)
            except KeyboardInterrupt as exc:
                if not shield:
                    future.cancel()
                    raise
                interrupted = exc
        try:
            if not future.done():
                future.cancel()
                raise NoResponse(f"labgrid coordinator {self.address}: {what} got no answer "
                                 f"within {self.timeout:g} s (is a labgrid >= 24 coordinator "
                                 f"listening there?)")
            try:
                return future.result()
            except RigError:
                raise
            except Exception as exc:
                raise self._translate(exc, what) from None
        finally:
            if interrupted is not None:
                raise interrupted

    def _translate(self, exc: BaseException, what: str) -> RigError:
        where = f"labgrid coordinator {self.address}: {what}"
        grpc = self._lg.grpc
        if isinstance(exc, grpc.aio.AioRpcError):
            code, details = exc.code(), exc.details()
            if code == grpc.StatusCode.UNAVAILABLE:
                return TransportError(f"{where}: coordinator not reachable ({details})")
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                return ConfigError(f"{where}: refused: {details}")
            if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED):
                return DeviceStateError(f"{where}: refused: {details}")
            return TransportError(f"{where}: {code.name}: {details}")
        if isinstance(exc, self._lg.client.Error):
            detail = " ".join(str(a) for a in exc.args)
            if what == "connect":
                return TransportError(f"{where}: {detail.lower()}: nothing answers there (is "
                                      f"the address right and labgrid-coordinator running?)")
            return TransportError(f"{where}: {detail}")
        return TransportError(f"{where}: {type(exc).__name__}: {exc}")

    def _alive(self) -> Any:
        client = self._client
        if client is None:
            raise DeviceStateError(f"{self!r}: needs an open session; state is CLOSED")
        if client.stopping.is_set():
            raise TransportError(f"labgrid coordinator {self.address}: the connection was lost")
        return client

    # views

    def places(self) -> dict[str, PlaceView]:
        """Every place the coordinator knows, by name."""
        self._require_open("places")
        return self._run(self._places(), "list places")

    async def _places(self) -> dict[str, PlaceView]:
        client = self._alive()
        return {name: _place_view(place) for name, place in client.places.items()}

    def place_state(self, name: str) -> PlaceState:
        """The place *name* with the resources it holds (acquired) or would hold (free)."""
        self._require_open("place_state")
        return self._run(self._place_state(name), f"read place '{name}'")

    async def _place_state(self, name: str) -> PlaceState:
        client = self._alive()
        place = client.places.get(name)
        if place is None:
            raise ConfigError(f"labgrid coordinator {self.address}: place '{name}' does not "
                              f"exist (any more)")
        live: dict[tuple[str, str, str], Any] = {}
        for exporter, groups in client.resources.items():
            for group, entries in groups.items():
                for rname, entry in entries.items():
                    if "cls" in entry.data:  # a deleted resource keeps an empty entry
                        live[(exporter, group, rname)] = entry
        if place.acquired:
            paths = [tuple(path) for path in place.acquired_resources]
        else:
            paths = [(e, g, entry.cls, r) for (e, g, r), entry in sorted(live.items())
                     if place.hasmatch((e, g, entry.cls, r))]
        views = []
        for exporter, group, cls, rname in paths:
            match = place.getmatch([exporter, group, cls, rname])
            shown = match.rename if match is not None and match.rename else rname
            entry = live.get((exporter, group, rname))
            if entry is None:
                views.append(ResourceView(exporter, group, cls, rname, shown, {}, {}, False, None,
                                          present=False))
            else:
                views.append(ResourceView(exporter, group, entry.cls, rname, shown,
                                          MappingProxyType(dict(entry.args)),
                                          MappingProxyType(dict(entry.extra)), bool(entry.avail),
                                          entry.acquired))
        return PlaceState(_place_view(place), tuple(views),
                          frozenset(exporter for exporter, _, _ in live))

    # requests

    def reserve(self, filters: Mapping[str, str], priority: float = 0.0) -> ReservationView:
        self._require_open("reserve")
        return self._run(self._reserve(dict(filters), priority), "create a reservation")

    async def _reserve(self, filters: dict[str, str], priority: float) -> ReservationView:
        client, pb2 = self._alive(), self._lg.pb2
        request = pb2.CreateReservationRequest(
            filters={"main": pb2.Reservation.Filter(filter=filters)}, prio=priority)
        response = await client.stub.CreateReservation(request)
        return self._reservation_view(response.reservation)

    def poll(self, token: str) -> ReservationView:
        """The reservation's state (polling also keeps it from expiring)."""
        self._require_open("poll")
        return self._run(self._poll(token), f"poll reservation {token}")

    async def _poll(self, token: str) -> ReservationView:
        client, pb2 = self._alive(), self._lg.pb2
        response = await client.stub.PollReservation(pb2.PollReservationRequest(token=token))
        return self._reservation_view(response.reservation)

    def _reservation_view(self, pb: Any) -> ReservationView:
        res = self._lg.common.Reservation.from_pb2(pb)
        allocated = res.allocations.get("main") or [None]
        return ReservationView(str(res.token), ReservationState(res.state.name), allocated[0],
                               str(res.owner))

    def cancel(self, token: str) -> None:
        """Cancel a reservation; one that no longer exists is not an error."""
        self._require_open("cancel")
        self._run(self._cancel(token), f"cancel reservation {token}", shield=True)

    async def _cancel(self, token: str) -> None:
        client, pb2, grpc = self._alive(), self._lg.pb2, self._lg.grpc
        try:
            await client.stub.CancelReservation(pb2.CancelReservationRequest(token=token))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise

    def acquire(self, place: str) -> None:
        self._require_open("acquire")
        self._run(self._acquire(place), f"acquire place '{place}'")

    async def _acquire(self, place: str) -> None:
        client, pb2 = self._alive(), self._lg.pb2
        await client.stub.AcquirePlace(pb2.AcquirePlaceRequest(placename=place))
        await client.sync_with_coordinator()

    def release(self, place: str) -> None:
        """Release *place* if this session's identity holds it (never someone else's)."""
        self._require_open("release")
        self._run(self._release(place), f"release place '{place}'", shield=True)

    async def _release(self, place: str) -> None:
        client, pb2 = self._alive(), self._lg.pb2
        me = f"{client.gethostname()}/{client.getuser()}"
        await client.stub.ReleasePlace(pb2.ReleasePlaceRequest(placename=place, fromuser=me))
        await client.sync_with_coordinator()


async def _cancel_tasks() -> None:
    """Cancel what is left on the session's loop (the stream pump of a lost connection, a
    request whose bound expired) and let it finish."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@dataclass(frozen=True)
class _Labgrid:
    client: Any
    common: Any
    pb2: Any
    grpc: Any


def _import_labgrid() -> _Labgrid:
    import sys

    hook = sys.excepthook  # labgrid.remote.client replaces it on import; keep the caller's
    try:
        import grpc
        from labgrid.remote import client, common
        from labgrid.remote.generated import labgrid_coordinator_pb2
    except ImportError as exc:
        raise ConfigError(f"{LABGRID_MISSING}: {exc}") from None
    finally:
        sys.excepthook = hook
    return _Labgrid(client, common, labgrid_coordinator_pb2, grpc)


def _place_view(place: Any) -> PlaceView:
    return PlaceView(name=str(place.name), tags=MappingProxyType(dict(place.tags)),
                     matches=tuple(sorted(str(m) for m in place.matches)),
                     acquired=place.acquired or None, reservation=place.reservation or None,
                     changed=float(place.changed))


# -- holding a place for a run ---------------------------------------------------------------

class LeaseState(enum.Enum):
    IDLE = "IDLE"
    WAITING = "WAITING"
    HELD = "HELD"
    RELEASED = "RELEASED"


class _SigtermAsInterrupt:
    """While a place is held, SIGTERM unwinds like Ctrl-C (KeyboardInterrupt), so every
    ``finally`` runs and the place is released.  A handler installed before is called first;
    an ignored SIGTERM stays ignored.  Only the main thread can install handlers."""

    def __init__(self) -> None:
        self._previous: Any = None
        self._installed = False

    def install(self) -> None:
        if self._installed or threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        if previous == signal.SIG_IGN:
            return
        self._previous = previous
        signal.signal(signal.SIGTERM, self._handle)
        self._installed = True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if callable(self._previous):
            self._previous(signum, frame)
        raise KeyboardInterrupt(f"SIGTERM (pid {os.getpid()})")

    def restore(self) -> None:
        if not self._installed:
            return
        self._installed = False
        if signal.getsignal(signal.SIGTERM) == self._handle:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None
                          else signal.SIG_DFL)


class Coordinator(Protocol):
    """The seam between a lease and the coordinator (:class:`CoordinatorSession`; a test
    passes a fake)."""

    @property
    def is_open(self) -> bool: ...

    @property
    def identity(self) -> str: ...

    def open(self) -> None: ...

    def close(self) -> None: ...

    def places(self) -> dict[str, PlaceView]: ...

    def place_state(self, name: str) -> PlaceState: ...

    def reserve(self, filters: Mapping[str, str], priority: float = 0.0) -> ReservationView: ...

    def poll(self, token: str) -> ReservationView: ...

    def cancel(self, token: str) -> None: ...

    def acquire(self, place: str) -> None: ...

    def release(self, place: str) -> None: ...


SessionFactory = Callable[..., Coordinator]
"""``factory(address, timeout=seconds)`` → an unopened :class:`Coordinator`."""


class PlaceLease:
    """Holds the place a bench file names: reserved and acquired in :meth:`acquire` (or on
    ``with``), released in :meth:`release` (on leaving ``with``, on an exception, Ctrl-C or
    SIGTERM too; idempotent).  While held, :attr:`config` is the complete bench."""

    def __init__(self, farm: FarmBench, *, session_factory: SessionFactory = CoordinatorSession,
                 poll_s: float = POLL_S, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if farm.labgrid is None:
            raise ConfigError(f"{farm.source}: no {SECTION} section: the bench is local "
                              f"(rigs.config.load_bench)")
        self.farm = farm
        self.labgrid: LabgridConfig = farm.labgrid
        self.state = LeaseState.IDLE
        self.place: str | None = None
        self.identity: str | None = None
        self._factory = session_factory
        self._poll_s = poll_s
        self._clock = clock
        self._sleep = sleep
        self._session: Coordinator | None = None
        self._token: str | None = None
        self._resolution: Resolution | None = None
        self._signals = _SigtermAsInterrupt()

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> PlaceLease:
        return cls(read_farm_bench(path), **kwargs)

    def __repr__(self) -> str:
        return f"PlaceLease({self.labgrid.wanted} on {self.labgrid.coordinator})"

    @property
    def config(self) -> BenchConfig:
        return self._held("config").config

    @property
    def mapped(self) -> tuple[MappedResource, ...]:
        return self._held("mapped").mapped

    @property
    def unused(self) -> tuple[str, ...]:
        """The place's resources the bench does not use, each with why."""
        return self._held("unused").unused

    def _held(self, what: str) -> Resolution:
        if self.state is not LeaseState.HELD or self._resolution is None:
            raise DeviceStateError(f"{self!r}: {what} needs a held place; state is "
                                   f"{self.state.value}")
        return self._resolution

    def describe(self) -> list[str]:
        """What the run holds, for the console and the report."""
        res = self._held("describe")
        lines = [f"labgrid: place '{self.place}' acquired on {self.labgrid.coordinator} as "
                 f"{self.identity}"]
        lines += [f"  {m}" for m in res.mapped]
        lines += [f"  {u}" for u in res.unused]
        return lines

    def __enter__(self) -> PlaceLease:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.release()
            return
        try:
            self.release()
        except RigError as problem:  # never hide why the run ended
            log.error("%s", problem)
            exc.add_note(str(problem))

    def acquire(self) -> BenchConfig:
        """Reserve, wait (bounded by ``acquire_timeout``), acquire, and map the resources
        (bounded by ``ready_timeout``).  On any failure, what was taken is given back."""
        if self.state is not LeaseState.IDLE:
            raise DeviceStateError(f"{self!r}: acquire() needs an unused lease; state is "
                                   f"{self.state.value}")
        lg = self.labgrid
        self._signals.install()
        self.state = LeaseState.WAITING
        try:
            session = self._session = self._factory(lg.coordinator, timeout=lg.connect_timeout)
            session.open()
            self.identity = session.identity
            self._check_exists(session.places())
            self._token = session.reserve(lg.filters, lg.priority).token
            place = self._wait_allocated(session, self._token)
            self.place = place  # from here on, release() gives it back (a no-op if not ours)
            try:
                session.acquire(place)
            except DeviceStateError as exc:
                raise DeviceStateError(f"{exc}{self._held_elsewhere(session, place)}") from None
            self.state = LeaseState.HELD
            self._resolution = self._wait_ready(session, place)
        except BaseException as exc:
            try:
                self.release()
            except RigError as problem:
                log.error("%s", problem)
                exc.add_note(str(problem))
            raise
        for line in self.describe():
            log.info("%s", line)
        return self._resolution.config

    def _where(self) -> str:
        return f"labgrid coordinator {self.labgrid.coordinator}"

    def _check_exists(self, places: Mapping[str, PlaceView]) -> None:
        lg = self.labgrid
        if any(p.fits(lg.filters) for p in places.values()):
            return
        known = "; ".join(p.describe() for _, p in sorted(places.items())) or "none"
        which = f"'{lg.place}'" if lg.place is not None else lg.wanted.removeprefix("a place ")
        raise ConfigError(f"{self.farm.source}: {self._where()} has no place {which} "
                          f"({SECTION}.{'place' if lg.place else 'tags'}); its places: {known}")

    def _wait_allocated(self, session: Coordinator, token: str) -> str:
        lg = self.labgrid
        deadline = self._clock() + lg.acquire_timeout
        said = False
        while True:
            res = session.poll(token)
            if res.state in (ReservationState.ALLOCATED, ReservationState.ACQUIRED) and res.place:
                return res.place
            if res.state in (ReservationState.EXPIRED, ReservationState.INVALID):
                raise DeviceStateError(f"{self._where()}: the reservation {token} for {lg.wanted} "
                                       f"became {res.state.value} (its place was deleted?)")
            left = deadline - self._clock()
            if left <= 0:
                raise NoResponse(self._busy(session))
            if not said:
                log.info("%s: waiting up to %g s for %s (reservation %s)", self._where(),
                         lg.acquire_timeout, lg.wanted, token)
                said = True
            self._sleep(min(self._poll_s, left))

    def _busy(self, session: Coordinator) -> str:
        lg = self.labgrid
        places: list[PlaceView] = []
        try:
            places = sorted((p for p in session.places().values() if p.fits(lg.filters)),
                            key=lambda p: p.name)
            held = "; ".join(p.describe() for p in places)
        except RigError as exc:
            held = f"(could not list them: {exc})"
        mine = [p.name for p in places if p.acquired == self.identity]
        hint = (f"; {', '.join(mine)} is held by this host and user ({self.identity}): a run "
                f"killed without releasing? free it with labgrid-client -x {lg.coordinator} -p "
                f"{mine[0]} release") if mine else ""
        return (f"{self._where()}: {lg.wanted} did not become free within "
                f"{lg.acquire_timeout:g} s ({SECTION}.acquire_timeout): {held}{hint}")

    def _wait_ready(self, session: Coordinator, place: str) -> Resolution:
        lg = self.labgrid
        deadline = self._clock() + lg.ready_timeout
        while True:
            state = session.place_state(place)
            if state.place.acquired != self.identity:
                raise DeviceStateError(f"{self._where()}: place '{place}' is "
                                       f"{state.place.holder()}, not held by {self.identity} "
                                       f"(released by someone else?)")
            try:
                return resolve(self.farm, state)
            except NotReady as exc:
                left = deadline - self._clock()
                if left <= 0:
                    raise NoResponse(f"{exc} (waited {lg.ready_timeout:g} s, "
                                     f"{SECTION}.ready_timeout)") from None
                self._sleep(min(READY_POLL_S, left))

    def release(self) -> None:
        """Give the place and the reservation back and disconnect; idempotent.  Raises
        :class:`TransportError` if the place may still be held (with how to free it)."""
        session, self._session = self._session, None
        if session is None:
            self._signals.restore()
            if self.state is not LeaseState.IDLE:
                self.state = LeaseState.RELEASED
            return
        problems: list[str] = []
        try:
            if session.is_open:
                if self.place is not None:
                    problem = self._release_place(session, self.place)
                    if problem:
                        problems.append(problem)
                if self._token is not None:
                    try:
                        session.cancel(self._token)
                    except RigError as exc:
                        log.warning("%s", exc)  # unpolled, it expires within a minute anyway
        finally:
            session.close()
            self._signals.restore()
            self.state = LeaseState.RELEASED
            self._resolution = None
        if problems:
            raise TransportError(f"{self._where()}: place '{self.place}' may still be acquired by "
                                 f"{self.identity}: {'; '.join(problems)}; free it with "
                                 f"labgrid-client -x {self.labgrid.coordinator} -p {self.place} "
                                 f"release-from {self.identity}")
        if self.place is not None:
            log.info("labgrid: place '%s' released on %s", self.place, self.labgrid.coordinator)

    def _release_place(self, session: Coordinator, place: str) -> str | None:
        """Release on *session*; if its connection is gone, once more on a new one (a
        coordinator that restarted has freed every place anyway).  Returns what went wrong."""
        try:
            session.release(place)
            return None
        except TransportError as exc:
            first = str(exc)
        except RigError as exc:
            return str(exc)
        retry = self._factory(self.labgrid.coordinator, timeout=self.labgrid.connect_timeout)
        try:
            retry.open()
            retry.release(place)
            return None
        except RigError as exc:
            return f"{first}; on a new connection: {exc}"
        finally:
            retry.close()

    def _held_elsewhere(self, session: Coordinator, place: str) -> str:
        """Why the coordinator could not acquire the place's resources: who holds them."""
        try:
            state = session.place_state(place)
        except RigError:
            return ""
        held = [f"{res} by {res.acquired}" + (" (the exporter could not start it: see its log)"
                                              if res.acquired == "<broken>" else "")
                for res in state.resources if res.acquired and res.acquired != place]
        return f"; its resources are held elsewhere: {', '.join(held)}" if held else ""


@contextmanager
def bench_from_file(path: str | Path) -> Iterator[BenchConfig]:
    """The bench a file describes: a local one as is, a labgrid place held for the block."""
    farm = read_farm_bench(path)
    if farm.labgrid is None:
        yield farm.local_config()
        return
    with PlaceLease(farm) as lease:
        yield lease.config


__all__ = [
    "DEFAULT_PORT",
    "MAPPERS",
    "TARGETS",
    "Coordinator",
    "CoordinatorSession",
    "FarmBench",
    "LabgridConfig",
    "LeaseState",
    "MappedResource",
    "NotReady",
    "PartKind",
    "PlaceLease",
    "PlaceState",
    "PlaceView",
    "ReservationState",
    "ReservationView",
    "Resolution",
    "ResourceRef",
    "ResourceView",
    "bench_from_file",
    "read_farm_bench",
    "resolve",
    "split_bench",
]
