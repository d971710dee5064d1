"""protocols.yamlmodel: one way to read a YAML file into a model, one ConfigError naming the
file and every bad key path, never a pydantic/yaml traceback, never a sensitive value."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from protocols.errors import ConfigError
from protocols.yamlmodel import (
    HexKey,
    HostPort,
    TerminalId,
    check_value,
    key_path,
    load_model,
    parse_hostport,
    validate_model,
)


class Op(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str = Field(repr=False)
    level: int = 1


class Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    master_key: HexKey = Field(repr=False)
    host: HostPort
    ops: dict[str, Op]
    items: list[Op] = []


GOOD = {"name": "x", "master_key": "00112233445566778899AABBCCDDEEFF", "host": "h:1",
        "ops": {"01": {"password": "secret-pw"}}}


def _error(data: object) -> str:
    with pytest.raises(ConfigError) as err:
        validate_model(Doc, data, "f.yaml", what="test file")
    return str(err.value)


def test_every_bad_key_is_named_with_its_path() -> None:
    text = _error({**GOOD, "colour": 1, "ops": {"01": {"level": "high"}, 2: {"password": "p"}},
                   "items": [{"password": "a"}, {"password": 5}], "host": "nowhere"})
    assert text.startswith("f.yaml: test file is not valid:\n")
    assert "  colour: unknown key (misspelt?)" in text
    assert "  ops.01.password: required key is missing" in text
    assert "  ops.01.level: expected an integer" in text
    assert "  ops.2 (the key itself): expected a string, got a number (quote it" in text
    assert "  items[1].password: expected a string" in text
    assert "  host: 'nowhere' is not host:port" in text
    assert "pydantic" not in text and "Traceback" not in text and "errors.pydantic.dev" not in text


def test_sensitive_values_are_never_echoed() -> None:
    text = _error({**GOOD, "master_key": "0011223344556677889900",
                   "ops": {"01": {"password": ["secret-pw"]}}})
    assert "master_key: expected a 16 or 24 byte 3DES key" in text
    assert "0011223344556677889900" not in text and "secret-pw" not in text


def test_top_level_must_be_a_mapping() -> None:
    assert "(top level): expected a mapping of keys at the top level; got a list" in _error([1])
    assert "the file is empty" in _error(None)


def test_files_unreadable_or_not_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing.yaml: cannot read test file \("):
        load_model(Doc, tmp_path / "missing.yaml", what="test file")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nops: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: test file is not valid YAML at line 3"):
        load_model(Doc, bad, what="test file")


def test_load_model_reads_and_validates(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text('name: x\nmaster_key: "00112233445566778899AABBCCDDEEFF"\nhost: "h:1"\n'
                    'ops: {"01": {password: p}}\n')
    doc = load_model(Doc, path, what="test file")
    assert doc.master_key == bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    assert doc.ops["01"].password == "p"


def test_key_path_and_shared_grammars() -> None:
    assert key_path(("operators", "01", "password")) == "operators.01.password"
    assert key_path(("terminals", 1, "master_key")) == "terminals[1].master_key"
    assert key_path(()) == "(top level)"
    assert parse_hostport("198.18.0.20:8583") == ("198.18.0.20", 8583)
    for bad in ("198.18.0.20", ":80", "h:0", "h:65536", "h:x", "a b:1"):
        with pytest.raises(ValueError, match="is not host:port"):
            parse_hostport(bad)
    assert check_value(TerminalId, "10000001", "--terminal-id") == "10000001"
    with pytest.raises(ConfigError, match=r"^--terminal-id: expected a terminal ID"):
        check_value(TerminalId, "123", "--terminal-id")
