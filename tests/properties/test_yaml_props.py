"""Properties of reading a bench file (protocols.yamlmodel through rigs.config.load_bench):
whatever a file holds — arbitrary bytes, arbitrary YAML-ish text, an arbitrary YAML tree, or the
example lab bench with any part replaced by an arbitrary tree — it loads or raises ConfigError
that names the file; never UnicodeDecodeError, RecursionError, a yaml or pydantic error, or
anything else."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import ConfigError
from rigs.config import BenchConfig, load_bench

REPO = Path(__file__).resolve().parents[2]
LAB_DOC: dict[str, Any] = yaml.safe_load(
    (REPO / "fixtures/benches/example-lab.yaml").read_text(encoding="utf-8"))
_names = itertools.count()

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
    st.sampled_from(["", " ", "loop://", "/dev/ttyUSB0", "socket://h:0", "rfc2217://h:70000",
                     "TCPIP0::h::5025::SOCKET", "198.18.0.20:8583", "h:65536", "10000001",
                     "keysight-e36xx", "concert", "virtual"]))
keys = st.one_of(st.text(max_size=12), st.sampled_from(sorted(LAB_DOC)), st.integers(),
                 st.booleans(), st.none())
trees = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)), max_leaves=25)
# YAML's own syntax, so the parser's corners (anchors, aliases, tags, flow, block scalars,
# documents, tabs, directives) are reached more often than by random text.
yaml_text = st.lists(st.sampled_from([
    *"abc01:.- \n\t{}[],&*!|>'\"#?%@`~\\", "!!int ", "!!float ", "!!binary ", "!!timestamp ",
    "!!python/object ", "&a ", "*a", "<<: ", "---\n", "...\n", "%YAML 1.1\n", "\ufeff", ".inf",
    ".nan", "2024-13-45", "9" * 5000, "\x00", "\u2028", "bench: ", "terminal: ", "port: ",
]), max_size=40).map("".join)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("yaml_props")


def _load(folder: Path, content: bytes) -> BenchConfig | None:
    path = folder / f"bench{next(_names)}.yaml"
    path.write_bytes(content)
    try:
        return load_bench(path)
    except ConfigError as exc:
        assert str(exc).startswith(f"{path}: "), str(exc)
        return None
    finally:
        path.unlink()


def _dump(tree: object) -> bytes:
    return yaml.safe_dump(tree, allow_unicode=True).encode("utf-8")


@given(st.binary(max_size=300))
def test_arbitrary_bytes_load_or_raise_config_error(folder: Path, data: bytes) -> None:
    _load(folder, data)


@given(yaml_text)
def test_arbitrary_yaml_text_loads_or_raises_config_error(folder: Path, text: str) -> None:
    _load(folder, text.encode("utf-8", "surrogatepass"))


@given(trees)
def test_arbitrary_yaml_tree_loads_or_raises_config_error(folder: Path, tree: object) -> None:
    _load(folder, _dump(tree))


def _replace(doc: Any, path: list[Any], value: object) -> None:
    for step in path[:-1]:
        doc = doc[step]
    doc[path[-1]] = value


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[list[Any]]:
    """Every key path of *doc* (mappings only: the example's values are scalars or mappings)."""
    out: list[list[Any]] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            out.append([*prefix, key])
            out += _paths(value, (*prefix, key))
    return out


LAB_PATHS = _paths(LAB_DOC)


@given(st.sampled_from(LAB_PATHS), trees)
def test_example_bench_with_any_part_replaced(folder: Path, path: list[Any], value: object) -> None:
    doc = copy.deepcopy(LAB_DOC)
    _replace(doc, path, value)
    _load(folder, _dump(doc))
