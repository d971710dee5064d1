"""Bad input in a bench file, rule by rule: each is one ConfigError naming the file, the key path
(or the line) and what was expected versus what was found.  The file-level rules (encoding,
size, nesting, aliases, duplicate keys, tabs) are the shared loader's (protocols.yamlmodel), so
they hold for every YAML file a person edits; the last tests show that on each of them."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from protocols.errors import ConfigError
from protocols.yamlmodel import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES
from rigs.config import load_bench, parse_bench
from rigs.transport import serial_url_error
from sim.card.profile import load_profile as load_card
from sim.host.config import load_terminals as load_host_terminals
from sim.host.rules import load_rules as load_host_rules
from sim.qr.config import load_terminals as load_qr_terminals
from sim.qr.rules import load_rules as load_qr_rules
from sim.terminal.profile import load_profile as load_terminal

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "fixtures/benches/example-lab.yaml"
LAB_DOC: dict[str, Any] = yaml.safe_load(LAB.read_text(encoding="utf-8"))
MINIMAL = "bench: {name: b}\nterminal: {port: loop://}\n"


def _write(tmp_path: Path, content: str | bytes, name: str = "bench.yaml") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _error(load: Callable[[Path], object], path: Path) -> str:
    with pytest.raises(ConfigError) as err:
        load(path)
    text = str(err.value)
    assert text.startswith(f"{path}: "), text
    assert "Traceback" not in text and "pydantic" not in text
    return text


def _bench_error(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> str:
    """The message of the example lab bench with *change* applied; the header is checked."""
    doc = copy.deepcopy(LAB_DOC)
    change(doc)
    path = _write(tmp_path, yaml.safe_dump(doc, sort_keys=False))
    text = _error(load_bench, path)
    assert text.startswith(f"{path}: bench file is not valid:\n"), text
    return text


# -- the file itself -------------------------------------------------------------------------

def test_not_utf8_names_line_and_byte(tmp_path: Path) -> None:
    path = _write(tmp_path, b"bench: {name: b}\nterminal: {port: /dev/tty\xffUSB0}\n")
    assert _error(load_bench, path) == (
        f"{path}: cannot read bench file: not UTF-8 text at line 2, column 26 (byte 42: FF); "
        f"save it as UTF-8")


def test_utf16_is_named_as_such(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL.encode("utf-16"))
    assert _error(load_bench, path) == (
        f"{path}: cannot read bench file: it is UTF-16 text (byte order mark FF FE); save it as "
        f"UTF-8")


def test_utf8_byte_order_mark_is_fine(tmp_path: Path) -> None:
    path = _write(tmp_path, b"\xef\xbb\xbf" + MINIMAL.encode())
    assert load_bench(path).bench.name == "b"


def test_control_character_names_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "bench: {name: b}\nterminal: {port: \x07}\n")
    assert _error(load_bench, path) == (
        f"{path}: bench file is not valid YAML at line 2, column 18: character U+0007 is not "
        f"allowed (control characters cannot appear in YAML)")


def test_tab_indentation_says_tab(tmp_path: Path) -> None:
    path = _write(tmp_path, "bench:\n\tname: b\n")
    assert _error(load_bench, path) == (
        f"{path}: bench file is not valid YAML at line 2, column 1: found character '\\t' that "
        f"cannot start any token (a tab: YAML indents and separates with spaces only; replace "
        f"it with spaces)")


def test_syntax_error_names_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "bench: {name: b\nterminal: {port: loop://}\n")
    assert _error(load_bench, path).startswith(
        f"{path}: bench file is not valid YAML at line 2, column ")


def test_duplicate_key_names_path_and_both_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, "bench: {name: b}\nterminal: {port: loop://}\npower:\n"
                            "  resource: TCPIP0::h::5025::SOCKET\n"
                            "  limits:\n    max_volts: 8.4\n    max_amps: 2\n    max_volts: 84\n")
    assert _error(load_bench, path) == (
        f"{path}: bench file is not valid at line 8, column 5: power.limits.max_volts is given "
        f"twice (first at line 6); YAML would silently keep the last one, so delete one")


def test_duplicate_top_level_section(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "bench: {name: c}\n")
    assert "at line 3, column 1: bench is given twice (first at line 1)" in _error(load_bench,
                                                                                    path)


def test_duplicate_key_in_a_list_item(tmp_path: Path) -> None:
    path = _write(tmp_path, "rules:\n  - answer: {drop: true}\n  - answer: {drop: true}\n"
                            "    times: 1\n    times: 2\n", "rules.yaml")
    assert "at line 5, column 5: rules[1].times is given twice (first at line 4)" in \
        _error(load_host_rules, path)


def test_merge_key_may_be_overridden(tmp_path: Path) -> None:
    path = _write(tmp_path, "bench: {name: b}\nterminal: &t {port: loop://, baudrate: 9600}\n"
                            "cards:\n  probe: loop://\n  bank:\n"
                            "    good: &card {reader: R0, pin: '1234'}\n"
                            "    other: {<<: *card, reader: R1}\n")
    config = load_bench(path)
    assert config.cards is not None and config.cards.bank["other"].reader == "R1"


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "x: " + "[" * 5000 + "]" * 5000 + "\n")
    assert _error(load_bench, path) == (
        f"{path}: bench file is not valid at line 3, column {MAX_DEPTH + 3}: mappings and lists "
        f"nest deeper than {MAX_DEPTH} levels")


def test_deep_nesting_through_aliases_is_refused(tmp_path: Path) -> None:
    inner = "[" * 20 + "1" + "]" * 20
    lines = [f"a0: &a0 {inner}"] + [f"a{i}: &a{i} {'[' * 19}*a{i - 1}{']' * 19}"
                                    for i in range(1, 4)]
    path = _write(tmp_path, MINIMAL + "\n".join(lines) + "\n")
    assert f"mappings and lists nest deeper than {MAX_DEPTH} levels once its aliases (*name) " \
           f"are expanded" in _error(load_bench, path)


def test_billion_laughs_is_refused(tmp_path: Path) -> None:
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = _write(tmp_path, MINIMAL + "\n".join(lines) + "\n")
    text = _error(load_bench, path)
    assert text.startswith(f"{path}: bench file is too large at line ")
    assert f": more than {MAX_NODES} values once its aliases (*name) are expanded (at l" in text


def test_alias_containing_itself_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "x: &x [1, *x]\n")
    assert _error(load_bench, path) == (
        f"{path}: bench file is not valid at line 3, column 4: an alias (*name) refers to a node "
        f"that contains it (x[1] repeats itself without end)")


def test_huge_file_is_refused_unread(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "#" * MAX_FILE_BYTES + "\n")
    assert _error(load_bench, path) == (
        f"{path}: bench file is too large: more than 1024 KiB (is it the right file?)")


def test_value_yaml_cannot_build_names_line(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "when: 2024-13-45\n")
    assert _error(load_bench, path) == (
        f"{path}: bench file is not valid YAML at line 3, column 7: cannot read '2024-13-45' as "
        f"a date (month must be in 1..12)")
    path = _write(tmp_path, MINIMAL + "n: " + "9" * 5000 + "\n")
    assert "as an integer (Exceeds the limit (4300 digits) for integer string conversion" in \
        _error(load_bench, path)


@pytest.mark.parametrize(("content", "got"), [
    ("", "the file is empty"),
    ("# only a comment\n", "the file is empty"),
    ("- bench\n- terminal\n", "got a list"),
    ("bench\n", "got text"),
    ("42\n", "got a number"),
])
def test_top_level_must_be_a_mapping(tmp_path: Path, content: str, got: str) -> None:
    path = _write(tmp_path, content)
    assert _error(load_bench, path) == (
        f"{path}: bench file is not valid:\n  (top level): expected a mapping of keys at the top "
        f"level; {got}")


# -- the bench model ---------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: d["terminal"].update(baudrate=-9600),
     "  terminal.baudrate: must be >= 50, got -9600"),
    (lambda d: d["terminal"].update(baudrate=True),
     "  terminal.baudrate: expected a number, got true"),
    (lambda d: d["terminal"].update(concert_baudrate=0),
     "  terminal.concert_baudrate: must be >= 50, got 0"),
    (lambda d: d["terminal"].update(baudrate=10_000_000),
     "  terminal.baudrate: must be <= 4000000, got 10000000"),
    (lambda d: d["terminal"].update(low_battery_volts=7.6),
     "  terminal.low_battery_volts: must be below nominal_volts (7.40 V), got 7.60 V: a healthy "
     "battery would warn"),
    (lambda d: d["terminal"].update(low_battery_volts=float("nan")),
     "  terminal.low_battery_volts: expected a finite number, got nan"),
    (lambda d: d["terminal"].update(nominal_volts=-7.4),
     "  terminal.nominal_volts: must be > 0, got -7.4"),
    (lambda d: d["terminal"].update(boot_timeout=float("inf")),
     "  terminal.boot_timeout: expected a finite number, got inf"),
    (lambda d: d["terminal"].update(boot_timeout=float("nan")),
     "  terminal.boot_timeout: expected a finite number, got nan"),
    (lambda d: d["terminal"].update(boot_timeout=0),
     "  terminal.boot_timeout: must be > 0, got 0"),
    (lambda d: d["terminal"].update(boot_timeout=-5),
     "  terminal.boot_timeout: must be > 0, got -5"),
    (lambda d: d["terminal"].update(boot_timeout="soon"),
     "  terminal.boot_timeout: expected a number, got text"),
    (lambda d: d["terminal"].update(port="rfc2217://ser2net:70000"),
     "  terminal.port: 'rfc2217://ser2net:70000': rfc2217:// needs host:port with a port "
     "1..65535; expected a device path"),
    (lambda d: d["terminal"].update(port="socket://ser2net:0"),
     "  terminal.port: 'socket://ser2net:0': socket:// needs host:port with a port 1..65535"),
    (lambda d: d["terminal"].update(port=""),
     "  terminal.port: '' is not a serial port URL; expected a device path"),
    (lambda d: d["terminal"]["operators"]["admin"].update(id=""),
     "  terminal.operators.admin.id: must not be empty, got ''"),
    (lambda d: d["terminal"].update(bootTimeout=45),
     "  terminal.bootTimeout: unknown key (misspelt?)"),
    (lambda d: d["power"].update(current_limit=3.0),
     "  power.current_limit: must be at most limits.max_amps (2.00 A), got 3.00 A"),
    (lambda d: d["power"].update(current_limit=float("inf")),
     "  power.current_limit: expected a finite number, got inf"),
    (lambda d: d["power"]["limits"].update(max_volts=float("inf")),
     "  power.limits.max_volts: expected a finite number, got inf"),
    (lambda d: d["power"]["limits"].update(max_amps=-2),
     "  power.limits.max_amps: must be > 0, got -2"),
    (lambda d: d["power"]["limits"].update(max_volts=7.0),
     "  terminal.nominal_volts: 7.40 V is above power.limits.max_volts (7.00 V): the supply "
     "may never give it"),
    (lambda d: d["power"].update(sample_period_ms=float("nan")),
     "  power.sample_period_ms: expected a finite number"),
    (lambda d: d["power"].update(resource="TCPIP0::198.18.3.10::70000::SOCKET"),
     "  power.resource: 'TCPIP0::198.18.3.10::70000::SOCKET': port 70000 outside 1..65535"),
    (lambda d: d["power"].update(resource=""),
     "  power.resource: '' is not a VISA resource string"),
    (lambda d: d["power"].update(channel=-1), "  power.channel: must be >= 1, got -1"),
    (lambda d: d["power"]["limits"].update(max_vols=8.4),
     "  power.limits.max_vols: unknown key (misspelt?)"),
    (lambda d: d["switch"]["channels"].update(paper_sensor=-1),
     "  switch.channels.paper_sensor: must be >= 1, got -1"),
    (lambda d: d["switch"]["channels"].update(paper_near_end=1),
     "  switch.channels: paper_sensor and paper_near_end are both on channel 1; one relay "
     "switches one line"),
    (lambda d: d["switch"].update(channels={}),
     "  switch.channels: expected at least one wired channel: signal name → channel"),
    (lambda d: d["cards"]["bank"]["good"].update(reader=""),
     "  cards.bank.good.reader: must not be empty, got ''"),
    (lambda d: d["cards"]["bank"]["good"].update(reader="   "),
     "  cards.bank.good.reader: must not be empty, got '   '"),
    (lambda d: d["cards"].update(pcsc_socket=""),
     "  cards.pcsc_socket: must not be empty, got ''"),
    (lambda d: d["cards"].update(emulator={"control": "", "reader": "R", "load_timeout": 1e999}),
     "  cards.emulator.control: must not be empty, got ''\n"
     "  cards.emulator.load_timeout: expected a finite number, got inf"),
    (lambda d: d["cards"].update(probe="socket://probe:65536"),
     "  cards.probe: 'socket://probe:65536': socket:// needs host:port with a port 1..65535"),
    (lambda d: d["network"].update(netns=""), "  network.netns: must not be empty, got ''"),
    (lambda d: d["host"].update(address="198.18.4.20:70000"),
     "  host.address: '198.18.4.20:70000' is not host:port: port 70000 outside 1..65535"),
    (lambda d: d["host"].update(address="198.18.4.20:0"),
     "  host.address: '198.18.4.20:0' is not host:port: port 0 outside 1..65535"),
    (lambda d: d["host"].update(address=""),
     "  host.address: '' is not host:port (e.g. 198.18.0.20:8583)"),
    (lambda d: d["host"].update(ledger=""), "  host.ledger: must not be empty, got ''"),
    (lambda d: d.update(qr={"address": "198.18.0.20:99999"}),
     "  qr.address: '198.18.0.20:99999' is not host:port: port 99999 outside 1..65535"),
    (lambda d: d["bench"].update(name=""), "  bench.name: must not be empty, got ''"),
    (lambda d: d["power"].update(driver=""), "  power.driver: must not be empty, got ''"),
    (lambda d: d.update(relays={}), "  relays: unknown key (misspelt?)"),
])
def test_bench_value_rules(tmp_path: Path, change: Callable[[dict[str, Any]], None],
                           expected: str) -> None:
    assert expected in _bench_error(tmp_path, change)


def _key_paths(doc: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += [(*prefix, key), *_key_paths(value, (*prefix, key))]
    return out


@pytest.mark.parametrize("keys", _key_paths(LAB_DOC), ids=".".join)
def test_no_key_of_the_bench_takes_a_senseless_value(keys: tuple[str, ...]) -> None:
    """Every key of the example lab bench refuses infinity, NaN, an empty or blank string,
    true/false, 0 and -1, in a message that names that key."""
    for value in (float("inf"), float("-inf"), float("nan"), "", "  ", True, 0, -1):
        doc = copy.deepcopy(LAB_DOC)
        section = doc
        for key in keys[:-1]:
            section = section[key]
        section[keys[-1]] = value
        with pytest.raises(ConfigError) as err:
            parse_bench(doc, "lab.yaml")
        assert f"\n  {'.'.join(keys)}" in str(err.value), (value, str(err.value))


def test_serial_url_port_rule_is_the_transports() -> None:
    """The bench file refuses what the transport would refuse (one grammar)."""
    assert serial_url_error("rfc2217://127.0.0.1:4001?ign_set_control") is None
    assert serial_url_error("socket://[::1]:7000") is None
    for bad in ("socket://h:70000", "socket://h:0", "socket://h:-1", "socket://h", "socket://:80",
                "rfc2217://h:x"):
        assert "needs host:port with a port 1..65535" in str(serial_url_error(bad)), bad


# -- every file a person edits -----------------------------------------------------------------

LOADERS: list[tuple[str, Callable[[Path], object], Path]] = [
    ("bench file", load_bench, LAB),
    ("terminal profile", load_terminal, REPO / "fixtures/terminal/profile.yaml"),
    ("card profile", load_card, REPO / "fixtures/cards/good.yaml"),
    ("host terminals file", load_host_terminals, REPO / "fixtures/host/terminals.yaml"),
    ("host rules file", load_host_rules, REPO / "fixtures/host/rules.yaml"),
    ("QR platform terminals file", load_qr_terminals, REPO / "fixtures/qr/terminals.yaml"),
    ("QR platform rules file", load_qr_rules, REPO / "fixtures/qr/rules.yaml"),
]


@pytest.mark.parametrize(("what", "load", "fixture"), LOADERS, ids=[w for w, _, _ in LOADERS])
def test_every_file_gets_the_file_rules(tmp_path: Path, what: str,
                                        load: Callable[[Path], object], fixture: Path) -> None:
    load(fixture)  # the fixture itself loads
    text = fixture.read_text(encoding="utf-8")
    first = next(line for line in text.splitlines() if line and not line.startswith(("#", " ")))
    key = first.split(":", 1)[0]
    line_of_copy = text.count("\n") + 1 + (0 if text.endswith("\n") else 1)
    dup = _write(tmp_path, text + ("" if text.endswith("\n") else "\n") + f"{key}: x\n",
                 fixture.name)
    assert _error(load, dup).startswith(
        f"{dup}: {what} is not valid at line {line_of_copy}, column 1: {key} is given twice")
    assert _error(load, _write(tmp_path, b"\xfe" + text.encode(), fixture.name)) == (
        f"{tmp_path / fixture.name}: cannot read {what}: not UTF-8 text at line 1, column 1 "
        f"(byte 0: FE); save it as UTF-8")
    deep = _write(tmp_path, "x: " + "[" * 100 + "]" * 100 + "\n", fixture.name)
    assert f"nest deeper than {MAX_DEPTH} levels" in _error(load, deep)
    assert _error(load, _write(tmp_path, "", fixture.name)).endswith(
        "(top level): expected a mapping of keys at the top level; the file is empty")


@pytest.mark.parametrize(("section", "key", "value", "expected"), [
    ("timeouts", "response", float("inf"), "timeouts.response: expected a finite number, got inf"),
    ("timeouts", "boot", 0, "timeouts.boot: must be > 0, got 0"),
    ("qr", "poll", float("nan"), "qr.poll: expected a finite number, got nan"),
    ("power", "hang_after", -1, "power.hang_after: must be > 0, got -1"),
    ("anomalies", "refund_window", float("inf"),
     "anomalies.refund_window: expected a finite number, got inf"),
    ("thresholds", "nominal_volts", float("nan"),
     "thresholds.nominal_volts: expected a finite number, got nan"),
    ("thresholds", "restart_volts", float("inf"),
     "thresholds.restart_volts: expected a finite number, got inf"),
])
def test_terminal_profile_numbers_are_finite(tmp_path: Path, section: str, key: str,
                                             value: float, expected: str) -> None:
    fixture = REPO / "fixtures/terminal/profile.yaml"
    doc = yaml.safe_load(fixture.read_text(encoding="utf-8"))
    doc.setdefault(section, {})[key] = value
    path = _write(tmp_path, yaml.safe_dump(doc), "profile.yaml")
    assert f"  {expected}" in _error(load_terminal, path)
