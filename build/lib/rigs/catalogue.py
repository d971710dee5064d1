"""The step catalogue: every Gherkin step the scenarios may use, with an example line each.

``python -m rigs.catalogue`` prints it for a terminal; ``--markdown`` prints docs/steps.md;
``--write PATH`` writes it; ``--check PATH`` exits 1 when PATH is not what would be written.

The steps are collected from the step modules the root conftest.py loads (its ``pytest_plugins``
entries starting with ``steps.``, read with :mod:`ast`, never by importing conftest.py).  Each
``@given/@when/@then(...)`` of pytest-bdd 9 leaves in its module's globals a pytest fixture
(``pytestbdd_stepdef_<type>_<name>``) wrapping a marker function; pytest-bdd maps that marker
to a :class:`pytest_bdd.steps.StepFunctionContext` (``step_function_context_registry``), which
holds the step type, the parser and the step function.  Every pattern bound to the same function
with the same keyword makes one :class:`StepEntry` (typically an English and a zh-CN pattern).

Each pattern gets an example line built from example values per parameter type (an amount
12.30, an integer 2, a word for text, the first choice of a regex alternation), which the
pattern's own parser accepts (tests/plugin/test_catalogue.py checks it).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import re
import string
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType, ModuleType

from pytest_bdd import parsers
from pytest_bdd.parsers import StepParser
from pytest_bdd.steps import StepFunctionContext, StepNamePrefix, step_function_context_registry

from protocols.ecr import FaultCode
from protocols.qr import Wallet
from rigs.capabilities import CAPABILITY_OF_TAG, REQUIREMENT, Capability, needs_of
from rigs.errors import RigError

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DOC = "docs/steps.md"
STEP_PACKAGE = "steps."

EN = "en"
ZH = "zh-CN"

#: Keyword of a step type, by language (pytest-bdd's ``step()`` without a type: any keyword).
KEYWORDS: Mapping[str | None, Mapping[str, str]] = MappingProxyType({
    "given": MappingProxyType({EN: "Given", ZH: "假如"}),
    "when": MappingProxyType({EN: "When", ZH: "当"}),
    "then": MappingProxyType({EN: "Then", ZH: "那么"}),
    None: MappingProxyType({EN: "*", ZH: "*"}),
})
_KEYWORD_ORDER: Mapping[str | None, int] = MappingProxyType({"given": 0, "when": 1, "then": 2, None: 3})

PARSE = "parse"
REGEX = "re"
STRING = "string"
PARSER_KIND_TEXT: Mapping[str, str] = MappingProxyType({
    PARSE: "parsers.parse",
    REGEX: "parsers.re",
    STRING: "plain text",
})


class CatalogueError(RigError):
    """The step catalogue cannot be built: a step module, a pattern or conftest.py is wrong."""


@dataclasses.dataclass(frozen=True)
class ParamType:
    """A parameter type as the catalogue shows it, and the example value it substitutes."""

    name: str
    description: str
    example: str
    python_type: type


#: Parameter types by name.  ``Amount`` and ``Number`` are the project's ``extra_types``
#: (steps/parsers.py); ``integer``, ``decimal`` and ``text`` are parse's own format types.
TYPES: Mapping[str, ParamType] = MappingProxyType({
    "Amount": ParamType("Amount", "a decimal amount like 12.30 (yuan, two decimals or none)", "12.30",
                        int),
    "Number": ParamType("Number", "a decimal number like 6.40 (volts, volts per second, amps)", "6.40",
                        float),
    "integer": ParamType("integer", "a whole number like 2", "2", int),
    "decimal": ParamType("decimal", "a decimal number like 2.50", "2.50", float),
    "word": ParamType("word", "one word (letters, digits, underscores)", "good", str),
    "text": ParamType("text", "any text", "good", str),
})

#: parse format type (the end of ``{name:spec}``) → catalogue type name.
_FORMAT_TYPES: Mapping[str, str] = MappingProxyType({
    "": "text", "Amount": "Amount", "Number": "Number",
    "d": "integer", "n": "integer",
    "f": "decimal", "F": "decimal", "e": "decimal", "g": "decimal",
    "w": "word", "l": "word", "S": "word",
})


@dataclasses.dataclass(frozen=True)
class TextExample:
    """Example values (English, Chinese) and a hint for a text parameter, by its name."""

    en: str
    zh: str
    hint: str = ""


#: Sensible example words for the text parameters the step modules use (by parameter name).
TEXT_EXAMPLES: Mapping[str, TextExample] = MappingProxyType({
    "card": TextExample("good", "good", "a card of the bench's card bank by name (good, mute, magstripe, "
                                        "contactless, …; the virtual bench's cards are fixtures/cards/)"),
    "entry": TextExample("chip", "插卡", "how the card is read: chip, stripe or tap (插卡, 刷卡, 闪付)"),
    "cvm": TextExample("online PIN", "联机密码",
                       "how the cardholder was verified: online PIN, offline PIN, signature or no "
                       "verification (联机密码, 脱机密码, 签名, 免密)"),
    "wallet": TextExample("wechat", "wechat", "a wallet: " + ", ".join(w.value for w in Wallet)),
    "code": TextExample("51", "51", "the acquirer's response code, two characters (00 approved, 51 "
                                    "insufficient funds, …)"),
    "codes": TextExample("55, 55 and 75", "55、55和75",
                         "response codes in order, separated by commas and 'and' (、 and 和)"),
    "stage": TextExample("after the request left", "after the request left",
                         "when the power is cut: before the request leaves, after the request left, "
                         "after the approval arrived, while the receipt is printing"),
    "line": TextExample("paper", "paper", "which line of the printer: presence or paper"),
})
_DEFAULT_TEXT = TextExample("good", "good")

#: Example values for one step's text parameter (``module.function:parameter``), where the
#: parameter's name alone says too little.
STEP_TEXT_EXAMPLES: Mapping[str, TextExample] = MappingProxyType({
    "steps.power_fault_steps.self_test_reports:code": TextExample(
        FaultCode.PRINTER_MISSING.value, FaultCode.PRINTER_MISSING.value,
        "a self-test fault code: " + ", ".join(f"{c.value} ({c.name.lower().replace('_', ' ')})"
                                               for c in FaultCode)),
})


def text_example(name: str, step: str = "") -> TextExample:
    """The example value and hint of the text parameter *name* of the step function *step*."""
    return STEP_TEXT_EXAMPLES.get(f"{step}:{name}") or TEXT_EXAMPLES.get(name, _DEFAULT_TEXT)

_CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]")


def is_chinese(text: str) -> bool:
    """True when *text* holds Chinese characters or punctuation (a zh-CN pattern)."""
    return _CJK.search(text) is not None


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One parameter of a step pattern: its name, its type, the choices of a regex alternation."""

    name: str
    type: str
    choices: tuple[str, ...] = ()
    hint: str = ""
    converter: str | None = None

    @property
    def description(self) -> str:
        return TYPES[self.type].description


@dataclasses.dataclass(frozen=True)
class Pattern:
    """One pattern of a step and the example line its own parser accepts."""

    text: str
    kind: str
    language: str
    display: str
    parameters: tuple[Parameter, ...]
    example: str
    parser: StepParser = dataclasses.field(compare=False, repr=False)
    also_matches: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class StepEntry:
    """A step function with one keyword and every pattern bound to it."""

    module: str
    path: str
    function: str
    line: int
    keyword: str
    step_type: str | None
    patterns: tuple[Pattern, ...]
    needs: tuple[Capability, ...]
    doc: str
    provides: str | None
    uses: tuple[str, ...]
    func: Callable[..., object] = dataclasses.field(compare=False, repr=False)

    @property
    def parameters(self) -> tuple[Parameter, ...]:
        """The parameters of every pattern, once each, in order of first appearance."""
        seen: dict[str, Parameter] = {}
        for pattern in self.patterns:
            for param in pattern.parameters:
                seen.setdefault(param.name, param)
        return tuple(seen.values())

    @property
    def english(self) -> tuple[Pattern, ...]:
        return tuple(p for p in self.patterns if p.language == EN)

    @property
    def chinese(self) -> tuple[Pattern, ...]:
        return tuple(p for p in self.patterns if p.language == ZH)

    @property
    def title(self) -> str:
        """The keyword and the first pattern (English when there is one)."""
        return f"{self.keyword} {self.patterns[0].display}"

    def example_line(self, pattern: Pattern) -> str:
        """*pattern*'s example as a Gherkin line, with the keyword of the pattern's language."""
        keyword = KEYWORDS[self.step_type][pattern.language]
        sep = "" if pattern.language == ZH and keyword != "*" else " "
        return f"{keyword}{sep}{pattern.example}"


# -- reading conftest.py ------------------------------------------------------------------------
def step_modules() -> list[str]:
    """The step library's modules, in the order the plugin loads them (steps.STEP_MODULES)."""
    from steps import STEP_MODULES

    return list(STEP_MODULES)


def _context_of(obj: object) -> StepFunctionContext | None:
    """The step context behind a ``pytestbdd_stepdef_*`` fixture (pytest ≥ 8.4 wraps the marker
    function in a FixtureFunctionDefinition; older pytest leaves the function itself)."""
    for candidate in (getattr(obj, "__wrapped__", None), obj):
        if candidate is None:
            continue
        try:
            context = step_function_context_registry.get(candidate)  # type: ignore[arg-type]
        except TypeError:  # not weak-referenceable: not a marker
            continue
        if context is not None:
            return context
    return None


def step_contexts(module: ModuleType) -> list[StepFunctionContext]:
    """The step definitions pytest-bdd registered in *module*, in the order they were made."""
    prefix = StepNamePrefix.step_def.value + "_"
    out = []
    for name, obj in vars(module).items():
        if not name.startswith(prefix):
            continue
        context = _context_of(obj)
        if context is None:
            raise CatalogueError(f"{module.__name__}: {name} looks like a pytest-bdd step fixture but "
                                 f"holds no step context (is this pytest-bdd 9?)")
        out.append(context)
    return out


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise CatalogueError(f"cannot import the step module {name} ({exc}); run from the repository "
                             f"root") from None


def _module_path(module: ModuleType) -> str:
    file = getattr(module, "__file__", None)
    if file:
        try:
            return Path(file).resolve().relative_to(ROOT).as_posix()
        except ValueError:
            pass
    return module.__name__.replace(".", "/") + ".py"


# -- patterns → parameters, display and example -------------------------------------------------
def _text_value(name: str, language: str, step: str) -> str:
    ex = text_example(name, step)
    return ex.zh if language == ZH else ex.en


def _format_type(spec: str, where: str) -> str:
    m = re.search(r"[A-Za-z%]*$", spec)
    suffix = m.group(0) if m else ""
    kind = _FORMAT_TYPES.get(suffix)
    if kind is None:
        raise CatalogueError(f"{where}: the field type {spec!r} has no example value in the catalogue; "
                             f"add it to TYPES and _FORMAT_TYPES in rigs/catalogue.py")
    return kind


def _converter_name(conv: Callable[[str], object] | None) -> str | None:
    if conv is None:
        return None
    return getattr(conv, "__qualname__", None) or type(conv).__name__


def _parse_pattern(text: str, converters: Mapping[str, Callable[[str], object]], where: str,
                   step: str) -> tuple[str, str, tuple[Parameter, ...], str]:
    """A parse pattern → (language, display, parameters, example)."""
    try:
        pieces = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise CatalogueError(f"{where}: braces in {text!r} do not pair up ({exc})") from None
    language = ZH if is_chinese("".join(literal for literal, *_ in pieces)) else EN
    display, example = [], []
    params: dict[str, Parameter] = {}
    for literal, name, spec, _conversion in pieces:
        display.append(literal)
        example.append(literal)
        if name is None:
            continue
        if not name:
            raise CatalogueError(f"{where}: {text!r} has an unnamed field {{}}; pytest-bdd passes only "
                                 f"named fields to the step function")
        kind = _format_type(spec or "", where)
        value = _text_value(name, language, step) if kind == "text" else TYPES[kind].example
        hint = text_example(name, step).hint if kind == "text" else ""
        params.setdefault(name, Parameter(name, kind, hint=hint,
                                          converter=_converter_name(converters.get(name))))
        display.append("{" + name + "}")
        example.append(value)
    return language, "".join(display), tuple(params.values()), "".join(example)


@dataclasses.dataclass(frozen=True)
class _Group:
    name: str | None
    body: str
    choices: tuple[str, ...] | None


_META = frozenset(".^$*+?{}[]|()")


def _closing_paren(source: str, start: int, where: str) -> int:
    depth, i, in_class = 0, start, False
    while i < len(source):
        c = source[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise CatalogueError(f"{where}: unbalanced parenthesis in the regex {source!r}")


def _split_alternatives(body: str) -> list[str]:
    alts, depth, start, i, in_class = [], 0, 0, 0, False
    while i < len(body):
        c = body[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            alts.append(body[start:i])
            start = i + 1
        i += 1
    alts.append(body[start:])
    return alts


def _literal(regex: str) -> str | None:
    """The text *regex* matches when it is literal (escapes of punctuation allowed), else None."""
    out, i = [], 0
    while i < len(regex):
        c = regex[i]
        if c == "\\":
            if i + 1 >= len(regex) or regex[i + 1].isalnum():
                return None
            out.append(regex[i + 1])
            i += 2
            continue
        if c in _META:
            return None
        out.append(c)
        i += 1
    return "".join(out)


def _regex_pieces(source: str, where: str) -> list[str | _Group]:
    """A regex made of literal text and groups (named or not; a quantifier ``? * +`` after an atom
    is allowed) → its literal runs and groups.  Anything else is not supported."""
    pieces: list[str | _Group] = []
    buf: list[str] = []
    i, end = 0, len(source)
    if source.startswith("^"):
        i = 1
    if source.endswith("$") and not source.endswith("\\$"):
        end -= 1

    def unsupported(what: str) -> CatalogueError:
        return CatalogueError(f"{where}: the catalogue cannot build an example for the regex {source!r} "
                              f"({what}); use literal text and named groups of literal choices")

    while i < end:
        c = source[i]
        if c == "\\":
            if i + 1 >= end or source[i + 1].isalnum():
                raise unsupported(f"the class escape {source[i:i + 2]!r} outside a group")
            buf.append(source[i + 1])
            i += 2
        elif c == "(":
            close = _closing_paren(source, i, where)
            if close >= end:
                raise unsupported("a group runs past the end")
            inner = source[i + 1:close]
            name: str | None = None
            if inner.startswith("?P<"):
                gt = inner.find(">")
                name, body = inner[3:gt], inner[gt + 1:]
            elif inner.startswith("?:"):
                body = inner[2:]
            elif inner.startswith("?"):
                raise unsupported(f"the group construct {inner[:3]!r}")
            else:
                body = inner
            alts = [_literal(a) for a in _split_alternatives(body)]
            choices = tuple(a for a in alts if a is not None) if all(a is not None for a in alts) else None
            if buf:
                pieces.append("".join(buf))
                buf = []
            pieces.append(_Group(name, body, choices))
            i = close + 1
        elif c in "?*+":
            i += 1  # the atom before it, once, is a match
            if i < end and source[i] == "?":
                i += 1  # lazy
        elif c in _META:
            raise unsupported(f"{c!r} at position {i}")
        else:
            buf.append(c)
            i += 1
    if buf:
        pieces.append("".join(buf))
    return pieces


def _regex_pattern(text: str, where: str, step: str) -> tuple[str, str, tuple[Parameter, ...], str]:
    """A regex pattern → (language, display, parameters, example).  The language is the one of
    its literal text (a group may offer choices in both languages)."""
    pieces = _regex_pieces(text, where)
    literal = "".join(p for p in pieces if isinstance(p, str))
    language = ZH if is_chinese(literal or text) else EN
    display, example = [], []
    params: dict[str, Parameter] = {}
    for piece in pieces:
        if isinstance(piece, str):
            display.append(piece)
            example.append(piece)
            continue
        if piece.choices:
            same = [c for c in piece.choices if is_chinese(c) == (language == ZH)]
            value = (same or list(piece.choices))[0]
        elif piece.name is not None:
            value = _text_value(piece.name, language, step)
            if re.fullmatch(piece.body, value) is None:
                raise CatalogueError(f"{where}: no example for the group {piece.name!r} ({piece.body!r}) "
                                     f"of the regex {text!r}; add one to TEXT_EXAMPLES in rigs/catalogue.py")
        else:
            raise CatalogueError(f"{where}: the unnamed group ({piece.body}) of the regex {text!r} is not "
                                 f"a choice of literal words")
        if piece.name is None:
            display.append("[" + " | ".join(piece.choices or ()) + "]")
        else:
            hint = text_example(piece.name, step).hint
            params.setdefault(piece.name, Parameter(piece.name, "text", piece.choices or (),
                                                    hint="" if piece.choices else hint))
            display.append("{" + piece.name + "}")
        example.append(value)
    return language, "".join(display), tuple(params.values()), "".join(example)


def make_pattern(parser: StepParser, converters: Mapping[str, Callable[[str], object]] | None = None,
                 where: str = "", step: str = "") -> Pattern:
    """A :class:`Pattern` of one step parser, with its example line.  *where* names the step in
    error messages; *step* (``module.function``) selects its own example values, if any."""
    text = parser.name
    where = f"{where}: {text!r}" if where else repr(text)
    conv = converters or {}
    if isinstance(parser, parsers.re):
        kind = REGEX
        language, display, params, example = _regex_pattern(text, where, step)
    elif isinstance(parser, parsers.parse):  # cfparse and steps.parsers.step() included
        kind = PARSE
        language, display, params, example = _parse_pattern(text, conv, where, step)
    elif isinstance(parser, parsers.string):
        kind, display, params, example = STRING, text, (), text
        language = ZH if is_chinese(text) else EN
    else:
        raise CatalogueError(f"{where}: unknown step parser {type(parser).__name__}")
    return Pattern(text=text, kind=kind, language=language, display=display, parameters=params,
                   example=example, parser=parser)


# -- collecting ---------------------------------------------------------------------------------
def _doc_summary(func: Callable[..., object]) -> str:
    """The docstring's first line (its summary: the first paragraph, on one line)."""
    doc = inspect.getdoc(func)
    if not doc:
        return ""
    return " ".join(doc.split("\n\n", 1)[0].split())


def _capability_order(cap: Capability) -> int:
    return list(Capability).index(cap)


def _arguments(func: Callable[..., object]) -> list[str]:
    try:
        return list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return []


@dataclasses.dataclass
class _Draft:
    module: str
    path: str
    func: Callable[..., object]
    step_type: str | None
    contexts: list[StepFunctionContext]


def collect(modules: Sequence[str] | None = None) -> list[StepEntry]:
    """Every step of *modules* (default: the ``steps.`` plugins of conftest.py), one entry per step
    function and keyword, grouped by module in the given order, sorted by keyword then pattern."""
    names = list(modules) if modules is not None else step_modules()
    drafts: dict[tuple[int, str | None], _Draft] = {}
    order: list[tuple[int, str | None]] = []
    seen_contexts: set[int] = set()
    for name in names:
        module = _import(name)
        path = _module_path(module)
        for context in step_contexts(module):
            if id(context) in seen_contexts:
                continue  # the same fixture re-exported by another step module
            seen_contexts.add(id(context))
            key: tuple[int, str | None] = (id(context.step_func), context.type)
            if key not in drafts:
                drafts[key] = _Draft(name, path, context.step_func, context.type, [])
                order.append(key)
            drafts[key].contexts.append(context)

    provided = {c.target_fixture for d in drafts.values() for c in d.contexts if c.target_fixture}
    entries = []
    for draft_key in order:
        d = drafts[draft_key]
        qualname = getattr(d.func, "__qualname__", repr(d.func))
        where = f"{d.path} ({qualname})"
        # decorators run bottom-up: the fixtures were made in reverse source order
        patterns = [make_pattern(c.parser, c.converters, where, f"{d.module}.{qualname}")
                    for c in reversed(d.contexts)]
        patterns.sort(key=lambda p: p.language != EN)  # stable: source order within a language
        targets = sorted({c.target_fixture for c in d.contexts if c.target_fixture})
        step_args = {p.name for pat in patterns for p in pat.parameters}
        uses = tuple(a for a in _arguments(d.func) if a in provided and a not in step_args)
        code = getattr(d.func, "__code__", None)
        entries.append(StepEntry(
            module=d.module, path=d.path, function=qualname,
            line=code.co_firstlineno if code is not None else 0,
            keyword=KEYWORDS[d.step_type][EN], step_type=d.step_type, patterns=tuple(patterns),
            needs=tuple(sorted(needs_of(d.func), key=_capability_order)), doc=_doc_summary(d.func),
            provides=", ".join(targets) or None, uses=uses, func=d.func))
    entries = _with_ambiguities(entries)
    module_rank = {n: i for i, n in enumerate(names)}
    entries.sort(key=lambda e: (module_rank.get(e.module, len(names)), _KEYWORD_ORDER[e.step_type],
                                e.patterns[0].display.casefold(), e.function))
    return entries


def _with_ambiguities(entries: list[StepEntry]) -> list[StepEntry]:
    """Note, on each pattern, the other steps of the same keyword its example line also matches."""
    out = []
    for entry in entries:
        patterns = []
        for pattern in entry.patterns:
            others = []
            for other in entries:
                if other is entry or not (other.step_type is None or entry.step_type is None
                                          or other.step_type == entry.step_type):
                    continue
                if any(_matches(p.parser, pattern.example) for p in other.patterns):
                    others.append(f"{other.path}: {other.title}")
            patterns.append(dataclasses.replace(pattern, also_matches=tuple(others)))
        out.append(dataclasses.replace(entry, patterns=tuple(patterns)))
    return out


def _matches(parser: StepParser, text: str) -> bool:
    try:
        return bool(parser.is_matching(text))
    except Exception:  # a parser that cannot even try (a converter failing) does not match
        return False


# -- rendering ----------------------------------------------------------------------------------
_TAG_OF_CAPABILITY: Mapping[Capability, str] = MappingProxyType(
    {cap: tag for tag, cap in CAPABILITY_OF_TAG.items()})


def capability_text(cap: Capability) -> str:
    """``cards (tag @card): a 'cards' section in the bench file (…)``."""
    tag = _TAG_OF_CAPABILITY.get(cap)
    tagged = f" (tag @{tag})" if tag else ""
    return f"{cap.value}{tagged}: needs {REQUIREMENT[cap]}"


def _param_text(param: Parameter) -> str:
    if param.choices:
        what = "one of: " + " | ".join(param.choices)
    else:
        what = param.hint or param.description
    text = f"{param.name}: {param.type} - {what}"
    if param.converter:
        text += f" (converted by {param.converter})"
    return text


def _group(entries: Iterable[StepEntry]) -> list[tuple[str, str, list[StepEntry]]]:
    groups: dict[str, tuple[str, list[StepEntry]]] = {}
    for entry in entries:
        groups.setdefault(entry.module, (entry.path, []))[1].append(entry)
    return [(module, path, items) for module, (path, items) in groups.items()]


def render_text(entries: Sequence[StepEntry]) -> str:
    """The catalogue for a terminal: one block per step."""
    lines: list[str] = []
    for _module, path, items in _group(entries):
        lines += [path, "=" * len(path), ""]
        for e in items:
            kinds = sorted({PARSER_KIND_TEXT[p.kind] for p in e.patterns})
            lines.append(f"{e.title}    [{', '.join(kinds)}]")
            for p in e.patterns[1:]:
                label = "中文" if p.language == ZH else "also"
                lines.append(f"  {label}: {e.keyword if p.language == EN else KEYWORDS[e.step_type][ZH]} "
                             f"{p.display}")
            if e.parameters:
                lines.append("  parameters:")
                lines += [f"    {_param_text(p)}" for p in e.parameters]
            lines.append("  example:")
            lines += [f"    {e.example_line(p)}" for p in e.patterns]
            if e.needs:
                lines.append("  needs:")
                lines += [f"    {capability_text(c)}" for c in e.needs]
            else:
                lines.append("  needs: only the terminal")
            if e.uses:
                lines.append(f"  uses: {', '.join(e.uses)} (from an earlier step)")
            if e.provides:
                lines.append(f"  provides: {e.provides}")
            for p in e.patterns:
                for other in p.also_matches:
                    lines.append(f"  ambiguous: {p.example!r} also matches {other}")
            lines.append(f"  in: {e.path}:{e.line} {e.function}" + (f" - {e.doc}" if e.doc else ""))
            lines.append("")
    count = len(entries)
    lines.append(f"{count} step{'s' if count != 1 else ''}")
    return "\n".join(lines) + "\n"


def _anchor(module: str) -> str:
    return module.removeprefix(STEP_PACKAGE).replace(".", "-").replace("_", "-")


def _md_code(text: str) -> str:
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _tags() -> tuple[Mapping[str, str], Mapping[str, str]]:
    """The plugin's registered tags and the procedure ids (imported late: pytest is heavy)."""
    from rigs.plugin import MARKERS, procedure_ids

    try:
        procedures = procedure_ids()
    except RigError:
        procedures = {}
    return MARKERS, procedures


_INTRO = """\
Every step the scenarios may use, collected from the step modules the root `conftest.py` loads.
Generated by `python -m rigs.catalogue --write docs/steps.md`: do not edit by hand (a test fails
when this page is stale).

## How to write a scenario from this page

A feature file lives under `features/` (`operating/`, `troubleshooting/`, `business/`, or
`zh-CN/` for the Chinese ones, which start with the line `# language: zh-CN`).  It has:

- `Feature:` (功能) a title and a few lines saying what the merchant does and why;
- `Background:` (背景) the steps every scenario of the file starts with, usually
  `Given the terminal is powered on and idle`, `And the operator is logged in`,
  `And the terminal is signed in with the acquirer`;
- one `Scenario:` (场景) per case, or a `Scenario Outline:` (场景大纲) with `Examples:` (例子)
  whose `<column>` values fill the step text;
- steps: `Given` (假如) sets the bench up, `When` (当) is what the operator, the cardholder or a
  fault does, `Then` (那么) checks the evidence; `And` (而且) and `But` (但是) repeat the keyword
  before them.

Write each step exactly as a pattern below, with a value in place of each `{parameter}` (the
example lines show one).  A step whose text matches no pattern fails the scenario with
"step definition not found".  Steps that pass a result to a later step (a purchase, a settlement,
a fault) say so under "provides"; a step that "uses" one must come after a step that provides it.

Tags go on the line above `Feature:` (for every scenario of the file) or above `Scenario:`:

- the id of each procedure the scenario proves, from `rigs/procedures.md` (`@OP-05`); the report
  counts, per id, the scenarios that pass;
- the kind of procedure: `@operating`, `@troubleshooting`, `@security`, and `@fault` when the
  scenario injects a fault, `@slow` when it takes more than a few seconds;
- the parts of the bench the scenario needs (the capability tags below).  A scenario whose tags
  or steps need a part the bench lacks is skipped at setup with the reason, never failed.  The
  steps say what they need ("needs" below), so the tag is for the reader and for selecting
  scenarios (`pytest -m card`); put the tag of every part the scenario's steps need.

Example:

```gherkin
@operating @card @ledger
Feature: Purchase by chip with online PIN
  The cardholder inserts the chip card and enters the PIN; the acquirer approves online.

  Background:
    Given the terminal is powered on and idle
    And the operator is logged in
    And the terminal is signed in with the acquirer

  @OP-05
  Scenario: Chip purchase with online PIN is approved and booked
    When the cardholder pays 12.34 by chip with the good card and its PIN
    Then the purchase is approved
    And the acquirer's ledger shows the approved purchase of 12.34
```
"""


def render_markdown(entries: Sequence[StepEntry]) -> str:
    """docs/steps.md: how to write a scenario, the tags, and every step with an example line."""
    markers, procedures = _tags()
    out: list[str] = ["# Step catalogue", "", _INTRO.rstrip(), ""]

    out += ["### Registered tags", "", "| tag | meaning |", "|---|---|"]
    out += [f"| `@{name}` | {_md_cell(doc)} |" for name, doc in markers.items()]
    out += ["", "### Capability tags: what each part of the bench is", "",
            "| tag | capability | the bench file must have |", "|---|---|---|"]
    for cap in Capability:
        tag = _TAG_OF_CAPABILITY.get(cap)
        out.append(f"| {f'`@{tag}`' if tag else '-'} | `{cap.value}` | {_md_cell(REQUIREMENT[cap])} |")
    out += ["", "A step without a capability needs only the terminal (and its ECR link).", ""]
    if procedures:
        out += ["### Procedure ids", "", "| tag | procedure |", "|---|---|"]
        out += [f"| `@{pid}` | {_md_cell(title)} |" for pid, title in procedures.items()]
        out.append("")

    groups = _group(entries)
    count = len(entries)
    out += ["## Steps by module", "",
            f"{count} step{'s' if count != 1 else ''}, grouped by the module that defines them.", ""]
    for module, path, items in groups:
        out.append(f"- [{path}](#{_anchor(module)}) ({len(items)})")
    out.append("")

    for module, path, items in groups:
        out += [f'<a id="{_anchor(module)}"></a>', "", f"## {path}", ""]
        for e in items:
            out += _markdown_entry(e)
    return "\n".join(out).rstrip() + "\n"


def _markdown_entry(e: StepEntry) -> list[str]:
    out = [f"### {_md_code(e.title)}", ""]
    for p in e.patterns[1:]:
        label = "中文" if p.language == ZH else "Also"
        keyword = KEYWORDS[e.step_type][p.language]
        sep = "" if p.language == ZH and keyword != "*" else " "
        out.append(f"- {label}: {_md_code(keyword + sep + p.display)}")
    if not e.chinese:
        out.append("- 中文: none")
    if e.parameters:
        out.append("- Parameters:")
        out += [f"  - {_md_parameter(p)}" for p in e.parameters]
    kinds = sorted({PARSER_KIND_TEXT[p.kind] for p in e.patterns})
    out.append(f"- Pattern kind: {', '.join(kinds)}")
    if not e.needs:
        out.append("- Needs: only the terminal")
    elif len(e.needs) == 1:
        out.append(f"- Needs: {_md_capability(e.needs[0])}")
    else:
        out.append("- Needs:")
        out += [f"  - {_md_capability(c)}" for c in e.needs]
    if e.uses:
        out.append(f"- Uses: {', '.join(f'`{u}`' for u in e.uses)} (from an earlier step that provides it)")
    if e.provides:
        out.append(f"- Provides: `{e.provides}`")
    for p in e.patterns:
        for other in p.also_matches:
            out.append(f"- **Ambiguous**: the example line {_md_code(p.example)} also matches "
                       f"{_md_code(other)}")
    where = f"- Defined in `{e.path}`, `{e.function}`"
    out.append(where + (f": {e.doc}" if e.doc else ""))
    out += ["", "```gherkin", *(e.example_line(p) for p in e.patterns), "```", ""]
    return out


def _md_parameter(p: Parameter) -> str:
    if p.choices:
        what = "one of " + ", ".join(_md_code(c) for c in p.choices)
    else:
        what = p.hint or p.description
    text = f"`{p.name}` ({p.type}): {what}"
    if p.converter:
        text += f" (converted by `{p.converter}`)"
    return text


def _md_capability(cap: Capability) -> str:
    tag = _TAG_OF_CAPABILITY.get(cap)
    return f"{f'`@{tag}`' if tag else f'`{cap.value}`'} ({cap.value}): {REQUIREMENT[cap]}"


# -- command line -------------------------------------------------------------------------------
def check(path: Path, entries: Sequence[StepEntry] | None = None) -> str | None:
    """Why *path* is not the markdown that would be generated (None: it is current)."""
    wanted = render_markdown(entries if entries is not None else collect())
    shown = path.as_posix()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return f"{shown} does not exist: run `python -m rigs.catalogue --write {shown}`"
    except OSError as exc:
        return f"{shown}: cannot read it ({exc.strerror})"
    if text != wanted:
        return f"{shown} is stale: run `python -m rigs.catalogue --write {shown}`"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rigs.catalogue",
                                     description="The step catalogue (docs/steps.md).")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--markdown", action="store_true", help="print the markdown form")
    mode.add_argument("--write", metavar="PATH", type=Path, help="write the markdown to PATH")
    mode.add_argument("--check", metavar="PATH", type=Path,
                      help="exit 1 when PATH differs from what --write would write")
    args = parser.parse_args(argv)
    if str(ROOT) not in sys.path:  # the step modules are imported from the repository root
        sys.path.insert(0, str(ROOT))
    try:
        entries = collect()
        if args.check is not None:
            problem = check(args.check, entries)
            if problem:
                print(problem, file=sys.stderr)
                return 1
            print(f"{args.check.as_posix()} is current ({len(entries)} steps)")
            return 0
        if args.write is not None:
            args.write.parent.mkdir(parents=True, exist_ok=True)
            args.write.write_text(render_markdown(entries), encoding="utf-8")
            print(f"wrote {args.write.as_posix()} ({len(entries)} steps)")
            return 0
        sys.stdout.write(render_markdown(entries) if args.markdown else render_text(entries))
        return 0
    except (RigError, OSError) as exc:
        print(f"catalogue: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
