"""Schema text without a parser: statement splitting, identifier quoting, and CREATE TABLE statements
cut into their column and constraint elements with every character kept.

A lexer rather than sqlglot: it works on text sqlglot cannot parse, and what it returns is the input's
own text, so a schema shortened for a prompt (:func:`sqltune.data.schema.fit_schema`) reads as written.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "TableText",
    "column_type",
    "idents",
    "parse_table_text",
    "quote_ident",
    "split_statements",
    "unquote",
]

# Words that must be quoted when used as identifiers (SQLite's and PostgreSQL's reserved words that
# appear in real schemas; quoting more than needed is harmless, quoting less breaks parsing).
_RESERVED = frozenset(
    """
    abort action add after all alter always analyze and as asc attach autoincrement before begin between
    by cascade case cast check collate column commit conflict constraint create cross current
    current_date current_time current_timestamp database default deferrable deferred delete desc detach
    distinct do drop each else end escape except exclude exclusive exists explain fail filter first
    following for foreign from full generated glob group groups having if ignore immediate in index
    indexed initially inner insert instead intersect into is isnull join key last left like limit match
    materialized natural no not nothing notnull null nulls of offset on or order others outer over
    partition plan pragma preceding primary query raise range recursive references regexp reindex release
    rename replace restrict returning right rollback row rows savepoint select set table temp temporary
    then ties to transaction trigger unbounded union unique update user using vacuum values view virtual
    when where window with without analyse any array asymmetric both fetch grant leading localtime
    localtimestamp only placing symmetric trailing variadic verbose
    """.split()
)
_SIMPLE_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def quote_ident(name: str) -> str:
    """Quote ``name`` with double quotes when it is not a plain identifier or is a reserved word."""
    if _SIMPLE_IDENT.match(name) and name.lower() not in _RESERVED:
        return name
    return '"' + name.replace('"', '""') + '"'


# ------------------------------------------------------------------------------------------ splitting

_TOKEN = re.compile(r"""('(?:[^']|'')*'|"(?:[^"]|"")*"|`[^`]*`|\[[^\]]*\]|--[^\n]*|/\*.*?\*/|;)""", re.S)


def split_statements(text: str, *, keep_terminators: bool = False) -> list[str]:
    """Split SQL text on semicolons outside quotes, brackets and comments; pieces holding only comments or
    whitespace are dropped, and each piece is stripped.

    A lexical splitter: it does not need the SQL to parse, so it also works on broken input (an
    unterminated quote is plain text). A comment before a statement stays with it. With
    ``keep_terminators`` each statement keeps the ``;`` that ended it (the last one may have none), so
    joining the pieces gives the statements back as written. Dollar-quoted PostgreSQL bodies are not
    understood.
    """
    pieces: list[tuple[str, bool]] = []
    buf: list[str] = []
    for part in _TOKEN.split(text):
        if part == ";":
            pieces.append(("".join(buf), True))
            buf = []
        else:
            buf.append(part)
    pieces.append(("".join(buf), False))
    out = []
    for piece, terminated in pieces:
        if _TOKEN.sub(_drop_comment, piece).strip():
            out.append(piece.strip() + (";" if terminated and keep_terminators else ""))
    return out


def _drop_comment(match: re.Match[str]) -> str:
    return "" if match.group(0).startswith(("--", "/*")) else match.group(0)


# ----------------------------------------------------------------------------------- CREATE TABLE text

_NAME = r"(?:\"[^\"]*\"|`[^`]*`|\[[^\]]*\]|[\w$]+)"
_CREATE_RE = re.compile(
    r"^\s*(?:(?:--[^\n]*\n|/\*.*?\*/)\s*)*CREATE\s+(?:(?:GLOBAL|LOCAL)\s+)?(?:TEMP(?:ORARY)?\s+|UNLOGGED\s+)?"
    rf"TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?((?:{_NAME}\s*\.\s*)*{_NAME})",
    re.I | re.S,
)
_CONSTRAINT_RE = re.compile(r"^(CONSTRAINT|PRIMARY\s+KEY|FOREIGN\s+KEY|UNIQUE|CHECK|INDEX|KEY)\b", re.I)
_IDENT_RE = re.compile(r'^\s*("(?:[^"]|"")*"|`[^`]*`|\[[^\]]*\]|[\w$]+)')


def unquote(name: str) -> str:
    """``"a b"``, `` `a b` `` and ``[a b]`` -> ``a b``; a plain name stays as it is."""
    name = name.strip()
    if len(name) >= 2 and name[0] in '"`[' and name[-1] in '"`]':
        return name[1:-1].replace('""', '"')
    return name


def idents(text: str) -> list[str]:
    """Every identifier-like token of ``text``, unquoted."""
    return [unquote(x) for x in re.findall(r"\"(?:[^\"]|\"\")*\"|`[^`]*`|\[[^\]]*\]|[\w$]+", text)]


@dataclass
class TableText:
    """One CREATE TABLE statement as text: ``header`` + ``(`` elements ``)`` + ``suffix`` is ``text``."""

    name: str
    text: str
    position: int
    header: str = ""
    elements: list[str] = field(default_factory=list)
    suffix: str = ""
    columns: list[str] = field(default_factory=list)  # one per element; "" for table constraints

    def render(self, keep: Sequence[int] | None = None) -> str:
        """The statement with only the elements at ``keep`` (all of them, as written, when None)."""
        if keep is None or not self.elements:
            return self.text
        body = ",\n  ".join(self.elements[i] for i in keep)
        return f"{self.header}(\n  {body}\n){self.suffix}"

    def primary_key(self) -> set[str]:
        """Lower-cased names of the primary-key columns (inline or table constraint)."""
        out: set[str] = set()
        for el, col in zip(self.elements, self.columns):
            if col and re.search(r"\bPRIMARY\s+KEY\b", el, re.I):
                out.add(col.lower())
            elif not col and re.match(r"^(CONSTRAINT\s+\S+\s+)?PRIMARY\s+KEY\b", el.strip(), re.I):
                inner = el[el.find("(") + 1 : el.rfind(")")] if "(" in el else ""
                out.update(c.lower() for c in idents(inner))
        return out


def parse_table_text(stmt: str, position: int = 0) -> TableText | None:
    """Cut one CREATE TABLE statement into elements; None when ``stmt`` is not a CREATE TABLE."""
    m = _CREATE_RE.match(stmt)
    if not m:
        return None
    names = idents(m.group(1))
    table = TableText(name=names[-1] if names else m.group(1), text=stmt, position=position)
    open_idx = stmt.find("(", m.end())
    if open_idx < 0 or stmt[m.end() : open_idx].strip().upper().startswith("AS"):
        return table
    close_idx = _matching_paren(stmt, open_idx)
    if close_idx < 0:
        return table
    table.header = stmt[:open_idx].rstrip() + " "
    table.suffix = stmt[close_idx + 1 :]
    table.elements = _top_level_split(stmt[open_idx + 1 : close_idx])
    for el in table.elements:
        if _CONSTRAINT_RE.match(el.strip()):
            table.columns.append("")
        else:
            im = _IDENT_RE.match(el)
            table.columns.append(unquote(im.group(1)) if im else "")
    return table


_COLUMN_CONSTRAINT = re.compile(
    r"\b(?:CONSTRAINT|PRIMARY|NOT|NULL|REFERENCES|DEFAULT|UNIQUE|CHECK|COLLATE|GENERATED|AUTOINCREMENT|"
    r"AUTO_INCREMENT|IDENTITY|AS|ON)\b",
    re.I,
)


def column_type(element: str) -> str:
    """The type of a column definition as written (``"VARCHAR(40)"`` of ``"name VARCHAR(40) NOT NULL"``),
    whitespace collapsed; ``""`` when the column has none."""
    m = _IDENT_RE.match(element)
    rest = element[m.end() :] if m else ""
    depth, quote, cut = 0, "", len(rest)
    for i, ch in enumerate(rest):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and (i == 0 or not (rest[i - 1].isalnum() or rest[i - 1] == "_")):
            if _COLUMN_CONSTRAINT.match(rest, i):
                cut = i
                break
    return " ".join(rest[:cut].split())


def _matching_paren(text: str, open_idx: int) -> int:
    depth, quote = 0, ""
    for i in range(open_idx, len(text)):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _top_level_split(body: str) -> list[str]:
    """Split a parenthesized body at depth-0 commas, respecting quotes."""
    parts, depth, cur, i, n = [], 0, [], 0, len(body)
    while i < n:
        ch = body[i]
        if ch in "'\"`":
            j = i + 1
            while j < n and not (body[j] == ch and not (j + 1 < n and body[j + 1] == ch)):
                j += 2 if body[j] == ch else 1
            cur.append(body[i : j + 1])
            i = j + 1
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
        i += 1
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts
