"""SOQL subset: tokenizer, recursive-descent parser, validation, DuckDB translation.

Supported: ``SELECT`` field lists (parent relationship paths such as ``Account.Name`` or
``Account.Owner.Name``, polymorphic ``Who.Name``, ``FIELDS(ALL|STANDARD|CUSTOM)``) or
``COUNT()``; ``FROM`` with an optional alias; ``WHERE`` with ``= != <> < <= > >= LIKE IN
NOT IN INCLUDES EXCLUDES``, ``AND``/``OR``/``NOT`` and parentheses (mixing AND and OR
without parentheses is refused, as Salesforce does); literals: strings, numbers,
true/false, null, datetimes (``Z``, ``±hh:mm``, fractional seconds) and dates;
``ORDER BY`` (ASC/DESC, NULLS FIRST/LAST), ``LIMIT``, ``OFFSET``.

Every identifier is validated against the live catalog: unknown object ->
``INVALID_TYPE``, unknown field or relationship -> ``INVALID_FIELD``, bad syntax ->
``MALFORMED_QUERY`` with Salesforce's "ERROR at Row:r:Column:c" message. Identifiers are
case-insensitive; output columns use the describe spelling.

Semantics that differ from SQL and are reproduced: comparisons are two-valued (a null
field makes ``=``/``<``/``LIKE`` false and ``!=``/``NOT IN`` true), text comparisons and LIKE
are case-insensitive, ASC sorts nulls first and DESC nulls last.

The translation uses quoted identifiers (all validated against the catalog) and bound
parameters for every literal; nothing from the query text is interpolated into SQL.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from sfdc_emulator.describe import FieldDef, SObjectDef
from sfdc_emulator.ids import to_18
from sfdc_emulator.schema import OrgSchema

TEXT_TYPES = frozenset(
    {"string", "textarea", "picklist", "multipicklist", "combobox", "email", "phone", "url"}
)
ID_TYPES = frozenset({"id", "reference"})
NUMERIC_TYPES = frozenset({"int", "double", "currency", "percent", "long"})
MAX_OFFSET = 2000  # Salesforce: OFFSET above 2,000 -> NUMBER_OUTSIDE_VALID_RANGE
MAX_FIELDS_ALL_LIMIT = 200  # FIELDS(ALL)/FIELDS(CUSTOM) require LIMIT <= 200
MAX_RELATIONSHIP_DEPTH = 5  # child-to-parent paths may traverse at most 5 levels

_INVALID_FIELD_HINT = (
    "If you are attempting to use a custom field, be sure to append the '__c' after the "
    "custom field name. Please reference your WSDL or the describe call for the appropriate "
    "names."
)
_INVALID_TYPE_HINT = (
    "If you are attempting to use a custom object, be sure to append the '__c' after the "
    "entity name. Please reference your WSDL or the describe call for the appropriate names."
)
_INVALID_REL_HINT = (
    "If you are attempting to use a custom relationship, be sure to append the '__r' after "
    "the custom relationship name. Please reference your WSDL or the describe call for the "
    "appropriate names."
)

KEYWORDS = frozenset(
    {
        "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "ORDER", "BY", "ASC",
        "DESC", "NULLS", "FIRST", "LAST", "LIMIT", "OFFSET", "NULL", "TRUE", "FALSE",
        "INCLUDES", "EXCLUDES", "GROUP", "HAVING", "WITH", "FOR", "USING", "TYPEOF",
    }
)  # fmt: skip


class SoqlError(Exception):
    """A query Salesforce would refuse; rendered as ``[{"message", "errorCode"}]`` (400)."""

    status = 400

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message


@dataclass(frozen=True)
class Token:
    kind: str  # IDENT STRING NUMBER DATETIME DATE OP PUNCT EOF
    value: str
    pos: int

    @property
    def upper(self) -> str:
        return self.value.upper()

    def is_kw(self, *words: str) -> bool:
        return self.kind == "IDENT" and self.value.upper() in words


_TOKEN_RE = re.compile(
    r"""
    (?P<WS>\s+)
  | (?P<DATETIME>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:?\d{2}))
  | (?P<DATE>\d{4}-\d{2}-\d{2}(?![\dT:]))
  | (?P<NUMBER>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<IDENT>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<STRING>'(?:[^'\\]|\\.)*')
  | (?P<OP>!=|<>|<=|>=|=|<|>)
  | (?P<PUNCT>[(),.:\-+])
    """,
    re.VERBOSE | re.DOTALL,
)


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            raise _malformed(text, pos, f"unexpected token: '{text[pos]}'")
        kind = m.lastgroup or ""
        if kind != "WS":
            tokens.append(Token(kind, m.group(), pos))
        pos = m.end()
    tokens.append(Token("EOF", "", len(text)))
    return tokens


def _position(text: str, pos: int) -> tuple[int, int, str]:
    line_start = text.rfind("\n", 0, pos) + 1
    line_end = text.find("\n", pos)
    line = text[line_start : line_end if line_end >= 0 else len(text)]
    return text.count("\n", 0, pos) + 1, pos - line_start + 1, line


def _error_at(code: str, text: str, pos: int, message: str) -> SoqlError:
    row, col, line = _position(text, pos)
    caret = " " * (col - 1) + "^"
    return SoqlError(code, f"\n{line}\n{caret}\nERROR at Row:{row}:Column:{col}\n{message}")


def _malformed(text: str, pos: int, message: str) -> SoqlError:
    return _error_at("MALFORMED_QUERY", text, pos, message)


_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "'": "'", "\\": "\\"}


def _unescape(raw: str, for_like: bool, text: str, pos: int) -> str:
    """Resolve SOQL backslash escapes. ``\\%``/``\\_`` stay escaped in LIKE patterns."""
    out: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = raw[i + 1]
        if nxt in "%_":
            out.append("\\" + nxt if for_like else nxt)
        elif nxt in _ESCAPES:
            value = _ESCAPES[nxt]
            out.append("\\\\" if for_like and value == "\\" else value)
        else:
            raise _malformed(text, pos + i + 1, f"Invalid string literal '{raw}'. Illegal escape")
        i += 2
    return "".join(out)


@dataclass(frozen=True)
class Join:
    alias: str
    object: SObjectDef
    parent_alias: str
    fk_column: str


@dataclass(frozen=True)
class FieldRef:
    """A resolved field path: the SQL expression that reads it and its describe spec."""

    path: tuple[str, ...]  # describe spelling, relationship names then field name
    field: FieldDef
    sql: str  # e.g. t1."Name" or COALESCE(t2."Name", t3."Name")

    @property
    def name(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True)
class OutputColumn:
    """One selected column. Address compounds expand to several SQL columns."""

    ref: FieldRef
    sql_names: tuple[str, ...]
    components: tuple[FieldDef, ...] = ()

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def path(self) -> tuple[str, ...]:
        return self.ref.path

    @property
    def field(self) -> FieldDef:
        return self.ref.field


@dataclass(frozen=True)
class RelationshipRef:
    """A traversed parent relationship; ``id_sql`` reads the parent's Id (for attributes)."""

    path: tuple[str, ...]
    id_sql: str
    sql_name: str


@dataclass(frozen=True)
class Compare:
    ref: FieldRef
    op: str  # = != < <= > >=
    value: Any


@dataclass(frozen=True)
class InList:
    ref: FieldRef
    values: tuple[Any, ...]
    negated: bool


@dataclass(frozen=True)
class Like:
    ref: FieldRef
    pattern: str  # with \% \_ \\ escapes


@dataclass(frozen=True)
class Includes:
    ref: FieldRef
    values: tuple[tuple[str, ...], ...]  # each value: the ;-separated set it requires
    negated: bool


@dataclass(frozen=True)
class BoolOp:
    op: str  # AND | OR
    items: tuple[Any, ...]


@dataclass(frozen=True)
class Not:
    item: Any


@dataclass(frozen=True)
class OrderItem:
    ref: FieldRef
    descending: bool
    nulls_first: bool


@dataclass(frozen=True)
class SoqlQuery:
    """A parsed, validated query."""

    text: str
    object: SObjectDef
    columns: tuple[OutputColumn, ...]
    is_count: bool
    where: Any
    order_by: tuple[OrderItem, ...]
    limit: int | None
    offset: int | None
    joins: tuple[Join, ...]
    relationships: tuple[RelationshipRef, ...]
    uses_fields_function: bool = False
    # Literal values in WHERE order; kept for debugging only (never logged).
    _params: tuple[Any, ...] = field(default=(), repr=False)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def quote_ident(name: str) -> str:
    """Quote a catalog identifier for DuckDB (names come from describe, never from users)."""
    return '"' + name.replace('"', '""') + '"'


def _find_object(catalog: Mapping[str, SObjectDef], name: str) -> SObjectDef | None:
    spec = catalog.get(name)
    if spec is not None:
        return spec
    lowered = name.lower()
    for key, value in catalog.items():
        if key.lower() == lowered:
            return value
    return None


class _Parser:
    def __init__(self, text: str, catalog: Mapping[str, SObjectDef]) -> None:
        self.text = text
        self.catalog = catalog
        self.tokens = tokenize(text)
        self.i = 0
        self.joins: dict[tuple[str, ...], list[Join]] = {}
        self.rel_order: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
        self.alias: str | None = None
        self.obj: SObjectDef | None = None

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def unexpected(self, tok: Token | None = None) -> SoqlError:
        tok = tok or self.tok
        if tok.kind == "EOF":
            return _malformed(self.text, tok.pos, "unexpected token: <EOF>")
        return _malformed(self.text, tok.pos, f"unexpected token: '{tok.value}'")

    def expect_kw(self, *words: str) -> Token:
        if not self.tok.is_kw(*words):
            raise self.unexpected()
        return self.advance()

    def expect_punct(self, value: str) -> Token:
        if self.tok.kind != "PUNCT" or self.tok.value != value:
            raise self.unexpected()
        return self.advance()

    def at_punct(self, value: str) -> bool:
        return self.tok.kind == "PUNCT" and self.tok.value == value

    def parse(self) -> SoqlQuery:
        self.expect_kw("SELECT")
        is_count, raw_items = self.select_head()
        self.expect_kw("FROM")
        obj = self.from_object()
        columns, uses_fields = self.output_columns(raw_items)
        where, order_by, limit, offset = self.clauses()
        if is_count and order_by:
            raise _malformed(self.text, 0, "ORDER BY not allowed with COUNT()")
        needs_limit = any(k == "fields" and p in ("ALL", "CUSTOM") for k, p, _ in raw_items)
        if needs_limit and (limit is None or limit > MAX_FIELDS_ALL_LIMIT):
            raise SoqlError(
                "MALFORMED_QUERY", "The SOQL FIELDS function must have a LIMIT of at most 200"
            )
        rels = tuple(
            RelationshipRef(path, self.id_sql(key), f"r{n}")
            for n, (key, path) in enumerate(self.rel_order)
        )
        joins = tuple(j for key in self.joins for j in self.joins[key])
        return SoqlQuery(
            text=self.text,
            object=obj,
            columns=tuple(columns),
            is_count=is_count,
            where=where,
            order_by=tuple(order_by),
            limit=limit,
            offset=offset,
            joins=joins,
            relationships=rels,
            uses_fields_function=uses_fields,
        )

    def select_head(self) -> tuple[bool, list[tuple[str, Any, int]]]:
        """``COUNT()`` (True, no items) or the select list's raw items."""
        if (
            self.tok.is_kw("COUNT")
            and self.tokens[self.i + 1].value == "("
            and self.tokens[self.i + 2].value == ")"
        ):
            self.i += 3
            return True, []
        return False, self.select_list()

    def from_object(self) -> SObjectDef:
        """The FROM object (and its alias, when one follows)."""
        obj_tok = self.tok
        if obj_tok.kind != "IDENT" or obj_tok.upper in KEYWORDS:
            raise self.unexpected()
        self.advance()
        obj = _find_object(self.catalog, obj_tok.value)
        if obj is None:
            raise _error_at(
                "INVALID_TYPE",
                self.text,
                obj_tok.pos,
                f"sObject type '{obj_tok.value}' is not supported. {_INVALID_TYPE_HINT}",
            )
        self.obj = obj
        if self.tok.kind == "IDENT" and self.tok.upper not in KEYWORDS:
            self.alias = self.advance().value
        return obj

    def output_columns(
        self, raw_items: list[tuple[str, Any, int]]
    ) -> tuple[list[OutputColumn], bool]:
        """The select items resolved against the FROM object, and whether FIELDS() was used
        (its fields are deduplicated; a field named twice is an error)."""
        columns: list[OutputColumn] = []
        uses_fields = False
        seen: set[str] = set()
        for kind, payload, pos in raw_items:
            if kind == "fields":
                uses_fields = True
                for f in self.fields_function(payload):
                    if f.name.lower() in seen:
                        continue
                    seen.add(f.name.lower())
                    columns.append(self.output_column(self.resolve_simple(f), len(columns)))
                continue
            ref = self.resolve(payload, pos)
            key = ref.name.lower()
            if key in seen:
                raise _malformed(self.text, pos, f"duplicate field selected: {ref.name}")
            seen.add(key)
            columns.append(self.output_column(ref, len(columns)))
        return columns, uses_fields

    def clauses(self) -> tuple[Any, list[OrderItem], int | None, int | None]:
        """WHERE, ORDER BY, LIMIT and OFFSET, up to the end of the query."""
        where = None
        if self.tok.is_kw("WHERE"):
            self.advance()
            where = self.condition()
        if self.tok.is_kw("WITH", "GROUP", "HAVING", "FOR", "USING", "TYPEOF"):
            raise self.unexpected()
        order_by: list[OrderItem] = []
        if self.tok.is_kw("ORDER"):
            self.advance()
            self.expect_kw("BY")
            order_by = self.order_list()
        limit = offset = None
        if self.tok.is_kw("LIMIT"):
            self.advance()
            limit = self.integer()
        if self.tok.is_kw("OFFSET"):
            self.advance()
            offset = self.integer()
            if offset > MAX_OFFSET:
                raise SoqlError(
                    "NUMBER_OUTSIDE_VALID_RANGE", f"Maximum SOQL offset allowed is {MAX_OFFSET}"
                )
        if self.tok.kind != "EOF":
            raise self.unexpected()
        return where, order_by, limit, offset

    def select_list(self) -> list[tuple[str, Any, int]]:
        items: list[tuple[str, Any, int]] = []
        while True:
            tok = self.tok
            if tok.is_kw("FIELDS") and self.tokens[self.i + 1].value == "(":
                self.i += 2
                kind = self.tok
                if not kind.is_kw("ALL", "STANDARD", "CUSTOM"):
                    raise self.unexpected()
                self.advance()
                self.expect_punct(")")
                items.append(("fields", kind.upper, tok.pos))
            elif tok.kind == "IDENT" and tok.upper not in KEYWORDS:
                if self.tokens[self.i + 1].value == "(":
                    # aggregate and other functions are outside the emulated subset
                    raise self.unexpected(self.tokens[self.i + 1])
                items.append(("path", self.path(), tok.pos))
            else:
                raise self.unexpected()
            if self.at_punct(","):
                self.advance()
                continue
            return items

    def path(self) -> list[str]:
        parts = [self.advance().value]
        while self.at_punct("."):
            self.advance()
            tok = self.tok
            if tok.kind != "IDENT":
                raise self.unexpected()
            parts.append(self.advance().value)
        return parts

    def fields_function(self, kind: str) -> list[FieldDef]:
        assert self.obj is not None
        if kind == "ALL":
            return list(self.obj.fields)
        if kind == "CUSTOM":
            return [f for f in self.obj.fields if f.custom]
        return [f for f in self.obj.fields if not f.custom]

    def resolve_simple(self, f: FieldDef) -> FieldRef:
        return FieldRef((f.name,), f, f"t0.{quote_ident(f.name)}")

    def resolve(self, parts: Sequence[str], pos: int) -> FieldRef:
        assert self.obj is not None
        parts = list(parts)
        if len(parts) > 1 and (
            (self.alias is not None and parts[0].lower() == self.alias.lower())
            or (
                parts[0].lower() == self.obj.name.lower()
                and not self._is_relationship(self.obj, parts[0])
            )
        ):
            parts = parts[1:]
        if len(parts) - 1 > MAX_RELATIONSHIP_DEPTH:
            raise _malformed(self.text, pos, "SOQL statements cannot query more than 5 levels")
        targets: list[tuple[str, SObjectDef]] = [("t0", self.obj)]
        names: list[str] = []
        for rel in parts[:-1]:
            if len(targets) > 1:
                raise self._bad_relationship(rel, pos)
            alias, current = targets[0]
            ref_field = self._relationship_field(current, rel)
            if ref_field is None:
                raise self._bad_relationship(rel, pos)
            rel_name = ref_field.relationship_name or rel
            names.append(rel_name)
            key = tuple(n.lower() for n in names)
            if key not in self.joins:
                specs = [_find_object(self.catalog, t) for t in ref_field.reference_to]
                specs_found = [s for s in specs if s is not None]
                if not specs_found:
                    raise self._bad_relationship(rel, pos)
                joins: list[Join] = []
                for spec in specs_found:
                    join_alias = f"t{sum(len(v) for v in self.joins.values()) + len(joins) + 1}"
                    joins.append(Join(join_alias, spec, alias, ref_field.name))
                self.joins[key] = joins
                self.rel_order.append((key, tuple(names)))
            targets = [(j.alias, j.object) for j in self.joins[key]]
        field_name = parts[-1]
        resolved: list[tuple[str, FieldDef]] = []
        for alias, spec in targets:
            try:
                resolved.append((alias, spec.field(field_name)))
            except KeyError:
                continue
        if not resolved or (len(targets) > 1 and len(resolved) != len(targets)):
            entity = targets[0][1].name if len(targets) == 1 else "Name"
            raise _error_at(
                "INVALID_FIELD",
                self.text,
                pos,
                f"No such column '{field_name}' on entity '{entity}'. {_INVALID_FIELD_HINT}",
            )
        spec_field = resolved[0][1]
        if len(resolved) == 1:
            sql = f"{resolved[0][0]}.{quote_ident(spec_field.name)}"
        else:
            sql = "COALESCE(" + ", ".join(f"{a}.{quote_ident(f.name)}" for a, f in resolved) + ")"
        return FieldRef((*names, spec_field.name), spec_field, sql)

    def _is_relationship(self, spec: SObjectDef, name: str) -> bool:
        return self._relationship_field(spec, name) is not None

    @staticmethod
    def _relationship_field(spec: SObjectDef, name: str) -> FieldDef | None:
        lowered = name.lower()
        for f in spec.fields:
            if f.type == "reference" and (f.relationship_name or "").lower() == lowered:
                return f
        return None

    def _bad_relationship(self, rel: str, pos: int) -> SoqlError:
        return _error_at(
            "INVALID_FIELD",
            self.text,
            pos,
            f"Didn't understand relationship '{rel}' in field path. {_INVALID_REL_HINT}",
        )

    def id_sql(self, key: tuple[str, ...]) -> str:
        joins = self.joins[key]
        if len(joins) == 1:
            return f'{joins[0].alias}."Id"'
        return "COALESCE(" + ", ".join(f'{j.alias}."Id"' for j in joins) + ")"

    def output_column(self, ref: FieldRef, index: int) -> OutputColumn:
        if ref.field.type != "address":
            return OutputColumn(ref, (f"c{index}",))
        # The compound's values live in its components, read from the same table alias.
        owner_alias = ref.sql.split(".", 1)[0]
        owner = self.obj if owner_alias == "t0" else self._alias_object(owner_alias)
        assert owner is not None
        components = tuple(f for f in owner.fields if f.compound_field_name == ref.field.name)
        names = tuple(f"c{index}_{n}" for n in range(len(components)))
        comp_refs = tuple(
            FieldRef((*ref.path[:-1], c.name), c, f"{owner_alias}.{quote_ident(c.name)}")
            for c in components
        )
        return OutputColumn(ref, names, tuple(r.field for r in comp_refs))

    def _alias_object(self, alias: str) -> SObjectDef | None:
        for joins in self.joins.values():
            for j in joins:
                if j.alias == alias:
                    return j.object
        return None

    def condition(self) -> Any:
        items = [self.unary()]
        op: str | None = None
        while self.tok.is_kw("AND", "OR"):
            this = self.tok.upper
            if op is not None and this != op:
                raise self.unexpected()
            op = this
            self.advance()
            items.append(self.unary())
        if op is None:
            return items[0]
        return BoolOp(op, tuple(items))

    def unary(self) -> Any:
        if self.tok.is_kw("NOT"):
            self.advance()
            return Not(self.unary())
        if self.at_punct("("):
            self.advance()
            inner = self.condition()
            self.expect_punct(")")
            return inner
        return self.comparison()

    def comparison(self) -> Any:
        tok = self.tok
        if tok.kind != "IDENT" or tok.upper in KEYWORDS:
            raise self.unexpected()
        ref = self.resolve(self.path(), tok.pos)
        if ref.field.type == "address":
            raise _error_at(
                "INVALID_FIELD",
                self.text,
                tok.pos,
                f"field '{ref.field.name}' can not be filtered in a query call",
            )
        op_tok = self.tok
        if op_tok.kind == "OP":
            self.advance()
            op = "!=" if op_tok.value == "<>" else op_tok.value
            value = self.literal(ref)
            if value is None and op not in ("=", "!="):
                raise _malformed(self.text, op_tok.pos, f"unexpected token: '{op_tok.value}'")
            if ref.field.type == "boolean" and op not in ("=", "!="):
                raise _error_at(
                    "INVALID_QUERY_FILTER_OPERATOR",
                    self.text,
                    op_tok.pos,
                    f"invalid operator on boolean field: {ref.field.name}",
                )
            return Compare(ref, op, value)
        negated = False
        if op_tok.is_kw("NOT"):
            self.advance()
            negated = True
            if not self.tok.is_kw("IN"):
                raise self.unexpected()
        if self.tok.is_kw("IN"):
            self.advance()
            return InList(ref, tuple(self.value_list(ref)), negated)
        if self.tok.is_kw("LIKE"):
            self.advance()
            lit = self.tok
            if lit.kind != "STRING":
                raise self.unexpected()
            self.advance()
            if ref.field.type not in TEXT_TYPES | ID_TYPES:
                raise _error_at(
                    "INVALID_FIELD",
                    self.text,
                    lit.pos,
                    f"invalid operator on field: {ref.field.name}",
                )
            return Like(ref, _unescape(lit.value[1:-1], True, self.text, lit.pos))
        if self.tok.is_kw("INCLUDES", "EXCLUDES"):
            kw = self.advance()
            if ref.field.type != "multipicklist":
                raise _error_at(
                    "INVALID_FIELD",
                    self.text,
                    kw.pos,
                    f"includes or excludes operator only valid on multipicklist field: "
                    f"{ref.field.name}",
                )
            values = self.value_list(ref)
            sets = tuple(
                tuple(sorted({p.strip().lower() for p in str(v).split(";") if p.strip()}))
                for v in values
                if v is not None
            )
            return Includes(ref, sets, kw.upper == "EXCLUDES")
        raise self.unexpected()

    def value_list(self, ref: FieldRef) -> list[Any]:
        self.expect_punct("(")
        values = [self.literal(ref)]
        while self.at_punct(","):
            self.advance()
            values.append(self.literal(ref))
        self.expect_punct(")")
        return values

    def literal(self, ref: FieldRef) -> Any:
        tok = self.tok
        ftype = ref.field.type
        if tok.is_kw("NULL"):
            self.advance()
            return None
        sign = 1
        if tok.kind == "PUNCT" and tok.value in "-+" and self.tokens[self.i + 1].kind == "NUMBER":
            sign = -1 if tok.value == "-" else 1
            self.advance()
            tok = self.tok
        kind = tok.kind
        if kind == "STRING":
            self.advance()
            if ftype not in TEXT_TYPES | ID_TYPES:
                raise self._type_mismatch(ref, tok)
            value = _unescape(tok.value[1:-1], False, self.text, tok.pos)
            if ftype in ID_TYPES and len(value) == 15 and value.isalnum():
                value = to_18(value)
            return value
        if kind == "NUMBER":
            self.advance()
            if ftype not in NUMERIC_TYPES:
                raise self._type_mismatch(ref, tok)
            text = tok.value
            if re.fullmatch(r"\d+", text):
                return sign * int(text)
            return sign * float(text)
        if tok.is_kw("TRUE", "FALSE"):
            self.advance()
            if ftype != "boolean":
                raise self._type_mismatch(ref, tok)
            return tok.upper == "TRUE"
        if kind == "DATETIME":
            self.advance()
            if ftype != "datetime":
                raise self._type_mismatch(ref, tok)
            return parse_datetime_literal(tok.value)
        if kind == "DATE":
            self.advance()
            if ftype != "date":
                raise self._type_mismatch(ref, tok)
            try:
                return date.fromisoformat(tok.value)
            except ValueError:
                raise _malformed(self.text, tok.pos, f"invalid date: {tok.value}") from None
        raise self.unexpected()

    def _type_mismatch(self, ref: FieldRef, tok: Token) -> SoqlError:
        ftype = ref.field.type
        if ftype in TEXT_TYPES | ID_TYPES:
            need = "string and should be enclosed in quotes"
        elif ftype == "datetime":
            need = "dateTime and should not be enclosed in quotes"
        elif ftype == "date":
            need = "date and should not be enclosed in quotes"
        elif ftype == "boolean":
            need = "boolean and should not be enclosed in quotes"
        else:
            need = "double and should not be enclosed in quotes"
        return _error_at(
            "INVALID_FIELD",
            self.text,
            tok.pos,
            f"value of filter criterion for field '{ref.field.name}' must be of type {need}",
        )

    def order_list(self) -> list[OrderItem]:
        items = []
        while True:
            tok = self.tok
            if tok.kind != "IDENT" or tok.upper in KEYWORDS:
                raise self.unexpected()
            ref = self.resolve(self.path(), tok.pos)
            if ref.field.type in ("address", "textarea", "multipicklist"):
                raise _error_at(
                    "INVALID_FIELD",
                    self.text,
                    tok.pos,
                    f"field '{ref.field.name}' can not be sorted in a query call",
                )
            descending = False
            if self.tok.is_kw("ASC", "DESC"):
                descending = self.advance().upper == "DESC"
            nulls_first = not descending
            if self.tok.is_kw("NULLS"):
                self.advance()
                nulls_first = self.expect_kw("FIRST", "LAST").upper == "FIRST"
            items.append(OrderItem(ref, descending, nulls_first))
            if self.at_punct(","):
                self.advance()
                continue
            return items

    def integer(self) -> int:
        tok = self.tok
        if tok.kind != "NUMBER" or not tok.value.isdigit():
            raise self.unexpected()
        self.advance()
        return int(tok.value)


def parse_datetime_literal(text: str) -> datetime:
    """``2024-01-01T00:00:00Z`` / ``...+05:30`` / fractional seconds -> naive UTC datetime."""
    m = re.fullmatch(
        r"(\d{4}-\d{2}-\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|([+-])(\d{2}):?(\d{2}))",
        text,
    )
    if m is None:
        raise SoqlError("MALFORMED_QUERY", f"invalid datetime: {text}")
    day = date.fromisoformat(m.group(1))
    frac = (m.group(5) or "0")[:6].ljust(6, "0")
    tz = UTC
    if m.group(6) != "Z":
        minutes = int(m.group(8)) * 60 + int(m.group(9))
        tz = timezone((-1 if m.group(7) == "-" else 1) * timedelta(minutes=minutes))
    value = datetime(
        day.year, day.month, day.day, int(m.group(2)), int(m.group(3)), int(m.group(4)),
        int(frac), tzinfo=tz,
    )  # fmt: skip
    return value.astimezone(UTC).replace(tzinfo=None)


def parse(text: str, catalog: Mapping[str, SObjectDef] | OrgSchema) -> SoqlQuery:
    """Parse and validate ``text`` against ``catalog`` (an OrgSchema or {name: SObjectDef})."""
    if not text or not text.strip():
        raise SoqlError("MALFORMED_QUERY", "SOQL query is required")
    # One snapshot of the live catalog for the whole parse (admin may change it meanwhile).
    if isinstance(catalog, OrgSchema):
        snapshot = {spec.name: spec for spec in catalog.objects()}
    else:
        snapshot = dict(catalog)
    return _Parser(text, snapshot).parse()


def _is_text(ref: FieldRef) -> bool:
    return ref.field.type in TEXT_TYPES


def _where_sql(node: Any, params: list[Any]) -> str:
    if isinstance(node, BoolOp):
        return "(" + f" {node.op} ".join(_where_sql(i, params) for i in node.items) + ")"
    if isinstance(node, Not):
        return f"(NOT {_where_sql(node.item, params)})"
    if isinstance(node, Compare):
        col = node.ref.sql
        if node.value is None:
            return f"({col} IS NULL)" if node.op == "=" else f"({col} IS NOT NULL)"
        value = node.value
        if _is_text(node.ref):
            # SOQL compares text case-insensitively (=, !=, and <, > too).
            col, value = f"lower({col})", str(value).lower()
        params.append(value)
        if node.op == "=":
            return f"COALESCE({col} = ?, FALSE)"
        if node.op == "!=":
            return f"COALESCE({col} <> ?, TRUE)"
        return f"COALESCE({col} {node.op} ?, FALSE)"
    if isinstance(node, InList):
        col = node.ref.sql
        non_null = [v for v in node.values if v is not None]
        has_null = len(non_null) != len(node.values)
        parts = []
        if non_null:
            if _is_text(node.ref):
                col = f"lower({col})"
                non_null = [str(v).lower() for v in non_null]
            params.extend(non_null)
            parts.append(f"COALESCE({col} IN ({', '.join('?' * len(non_null))}), FALSE)")
        if has_null:
            parts.append(f"({node.ref.sql} IS NULL)")
        expr = "(" + " OR ".join(parts) + ")"
        return f"(NOT {expr})" if node.negated else expr
    if isinstance(node, Like):
        params.append(node.pattern)
        return f"COALESCE({node.ref.sql} ILIKE ? ESCAPE '\\', FALSE)"
    if isinstance(node, Includes):
        parts = []
        for required in node.values:
            params.append(list(required))
            parts.append(
                f"COALESCE(list_has_all(list_transform(string_split(lower({node.ref.sql}), ';'), "
                f"x -> trim(x)), ?::VARCHAR[]), FALSE)"
            )
        expr = "(" + (" OR ".join(parts) or "FALSE") + ")"
        return f"(NOT {expr})" if node.negated else expr
    raise TypeError(f"unknown WHERE node {type(node).__name__}")


Formatter = Callable[[str, FieldDef], str]


def to_sql(
    query: SoqlQuery,
    *,
    include_deleted: bool,
    formatter: Formatter | None = None,
    with_relationship_ids: bool = True,
) -> tuple[str, list[Any]]:
    """DuckDB SQL + parameters for ``query``.

    Output columns are named ``c<i>`` (address components ``c<i>_<j>``) and, when
    ``with_relationship_ids``, ``r<k>`` for the Id of each traversed parent. ``formatter``
    wraps each column expression (Bulk uses it to render CSV text inside DuckDB).
    ``include_deleted`` = queryAll semantics; otherwise rows with IsDeleted are excluded.
    """
    params: list[Any] = []
    base = quote_ident(query.object.name)
    from_sql = f"{base} AS t0"
    for j in query.joins:
        from_sql += (
            f" LEFT JOIN {quote_ident(j.object.name)} AS {j.alias}"
            f' ON {j.alias}."Id" = {j.parent_alias}.{quote_ident(j.fk_column)}'
        )
    conditions = []
    if not include_deleted:
        conditions.append('t0."IsDeleted" = FALSE')
    if query.where is not None:
        conditions.append(_where_sql(query.where, params))
    where_sql = (" WHERE " + " AND ".join(conditions)) if conditions else ""
    tail = ""
    if query.order_by:
        parts = []
        for item in query.order_by:
            parts.append(
                f"{item.ref.sql} {'DESC' if item.descending else 'ASC'} "
                f"NULLS {'FIRST' if item.nulls_first else 'LAST'}"
            )
        tail += " ORDER BY " + ", ".join(parts)
    if query.limit is not None:
        tail += " LIMIT ?"
    if query.offset is not None:
        if query.limit is None:
            tail += " LIMIT NULL"
        tail += " OFFSET ?"
    tail_params = [v for v in (query.limit, query.offset) if v is not None]

    if query.is_count:
        inner = f"SELECT 1 FROM {from_sql}{where_sql}{tail}"
        return f"SELECT count(*) AS c FROM ({inner}) AS q", params + tail_params

    select = []
    for col in query.columns:
        if col.components:
            owner_alias = col.ref.sql.split(".", 1)[0]
            for comp, name in zip(col.components, col.sql_names, strict=True):
                expr = f"{owner_alias}.{quote_ident(comp.name)}"
                select.append(f"{formatter(expr, comp) if formatter else expr} AS {name}")
        else:
            expr = col.ref.sql
            select.append(
                f"{formatter(expr, col.field) if formatter else expr} AS {col.sql_names[0]}"
            )
    if with_relationship_ids:
        select.extend(f"{r.id_sql} AS {r.sql_name}" for r in query.relationships)
    sql = f"SELECT {', '.join(select)} FROM {from_sql}{where_sql}{tail}"
    return sql, params + tail_params
