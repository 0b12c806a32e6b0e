"""String- and AST-level comparison of SQL: normalize, exact_match, ast_equivalent, transpile."""

from __future__ import annotations

import logging
import re

from sqlglot import exp

from sqltune.errors import SQLError
from sqltune.sql._dialects import canonical_dialect
from sqltune.sql.analyze import parse
from sqltune.sql.schema import as_schema

log = logging.getLogger(__name__)
_SIMPLE_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


def _collapse(sql: str) -> str:
    text = re.sub(r"\s+", " ", sql.strip()).rstrip("; ").strip()
    return text.lower()


def _canonical_identifiers(tree: exp.Expression) -> exp.Expression:
    """Lower-case identifiers and drop quotes that are not needed."""
    for ident in tree.find_all(exp.Identifier):
        name = str(ident.this)
        low = name.lower()
        if _SIMPLE_IDENT.match(low):
            ident.set("this", low)
            ident.set("quoted", False)
        elif not ident.args.get("quoted"):
            ident.set("this", low)
    return tree


def normalize(sql: str, dialect: str) -> str:
    """Canonical text of ``sql`` for exact-match comparison.

    Parsed with sqlglot and regenerated: keyword case, whitespace, unnecessary identifier quotes,
    identifier case and trailing semicolons no longer matter. Unparseable SQL falls back to a
    whitespace- and case-collapsed version of the text. Never raises for bad SQL.
    """
    dialect = canonical_dialect(dialect)
    if not isinstance(sql, str):
        return ""
    try:
        statements = parse(sql, dialect)
        if not statements or any(isinstance(s, exp.Command) for s in statements):
            return _collapse(sql)
        return "; ".join(_canonical_identifiers(s).sql(dialect=dialect) for s in statements)
    except Exception:  # noqa: BLE001
        return _collapse(sql)


def exact_match(pred: str, gold: str, dialect: str) -> bool:
    """True when the two queries normalize (see :func:`normalize`) to the same text."""
    return normalize(pred, dialect) == normalize(gold, dialect)


def transpile(sql: str, src: str, dst: str, *, schema=None) -> str:
    """Translate ``sql`` from dialect ``src`` to ``dst`` (statements joined with ``;\\n``).

    From SQLite, ``"double-quoted"`` names that SQLite would read as string literals (it does so when
    no column has that name) become string literals: with ``schema`` (DDL, Schema or mapping) every
    unqualified quoted name that is no column of the schema; without it, quoted names on the right
    of a comparison/LIKE with a column on the left, or in an ``IN (...)`` list (Spider's
    ``WHERE name = "Bob"``). Raises SQLError when sqlglot cannot parse the input.
    """
    src, dst = canonical_dialect(src), canonical_dialect(dst)
    try:
        statements = parse(sql, src)
    except Exception as exc:  # noqa: BLE001
        raise SQLError(f"cannot parse SQL as {src}: {str(exc).splitlines()[0] if str(exc) else exc}") from exc
    if src == "sqlite" and dst != "sqlite":
        schema_obj = as_schema(schema, src)
        statements = [sqlite_quoted_strings(s, schema_obj) for s in statements]
    return ";\n".join(s.sql(dialect=dst) for s in statements)


_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Like, exp.ILike)


def sqlite_quoted_strings(tree: exp.Expression, schema=None) -> exp.Expression:
    """Turn SQLite ``"x"`` names that act as string literals into real string literals (see transpile)."""
    known: set[str] | None = None
    if schema is not None:
        known = {c.lower() for cols in schema.tables.values() for c in cols}
        for sel in tree.find_all(exp.Select):
            known.update(p.alias.lower() for p in sel.expressions if isinstance(p, exp.Alias))
    for col in list(tree.find_all(exp.Column)):
        ident = col.this
        if col.table or not isinstance(ident, exp.Identifier) or not ident.args.get("quoted"):
            continue
        if known is not None:
            is_string = ident.name.lower() not in known
        else:
            parent = col.parent
            is_string = (
                isinstance(parent, _COMPARISONS) and parent.expression is col
                and isinstance(parent.this, (exp.Column, exp.Func, exp.Cast))
                and not (isinstance(parent.this, exp.Column) and parent.this.this.args.get("quoted")
                         and not parent.this.table)
            ) or (isinstance(parent, exp.In) and col in (parent.expressions or []))
        if is_string:
            col.replace(exp.Literal.string(ident.name))
    return tree


# -- AST equivalence ---------------------------------------------------------------------------------
def ast_equivalent(pred: str, gold: str, dialect: str, *, schema=None) -> bool:
    """Structural equivalence after canonicalization; never raises (False on any failure).

    Robust to: keyword/identifier case, quoting, whitespace, table alias names (``FROM t AS a`` vs
    ``FROM t AS b`` vs ``FROM t``), output column aliases, ``AS`` keywords, the order of AND/OR
    operands and of the two sides of ``=``/``<>``, ``!=`` vs ``<>``, and redundant parentheses.
    """
    try:
        dialect = canonical_dialect(dialect)
        a, b = _canonical_tree(pred, dialect), _canonical_tree(gold, dialect)
        if a is None or b is None:
            return False
        return a == b
    except Exception as exc:  # noqa: BLE001
        log.debug("ast_equivalent failed: %s", exc)
        return False


_STATEMENTS = (exp.Query, exp.Subquery, exp.Values, exp.DML, exp.DDL)


def _canonical_tree(sql: str, dialect: str) -> str | None:
    statements = parse(sql, dialect)
    if len(statements) != 1 or not isinstance(statements[0], _STATEMENTS):
        return None
    tree = _canonical_identifiers(statements[0].copy())
    tree = _canonical_table_aliases(tree)
    tree = _drop_output_aliases(tree)
    tree = tree.transform(_strip_parens)
    tree = tree.transform(_sort_commutative)
    return repr(tree)


def _canonical_table_aliases(tree: exp.Expression) -> exp.Expression:
    """Replace table aliases by canonical names, per SELECT: the table's own name when it appears
    once in that FROM clause, else ``<name>__<n>`` in order of appearance."""
    for select in list(tree.find_all(exp.Select)):
        tables = [t for t in _from_tables(select) if isinstance(t.this, exp.Identifier)]
        counts: dict[str, int] = {}
        for t in tables:
            counts[t.name] = counts.get(t.name, 0) + 1
        seen: dict[str, int] = {}
        mapping: dict[str, str] = {}
        for t in tables:
            alias = t.alias
            if counts[t.name] == 1:
                canonical = t.name
            else:
                seen[t.name] = seen.get(t.name, 0) + 1
                canonical = f"{t.name}__{seen[t.name]}"
            if alias:
                mapping[alias.lower()] = canonical
            elif counts[t.name] == 1:
                mapping[t.name.lower()] = canonical
            if canonical != t.name:
                t.set("alias", exp.TableAlias(this=exp.to_identifier(canonical)))
            else:
                t.set("alias", None)
        only = None
        if len(tables) == 1 and not select.args.get("joins") and counts[tables[0].name] == 1:
            only = tables[0].name  # a single-table SELECT: qualify bare columns with the table
        aliases = {p.alias.lower() for p in select.expressions if isinstance(p, exp.Alias)}
        for col in list(select.find_all(exp.Column)):
            if _owning_select(col) is not select or isinstance(col.this, exp.Star):
                continue
            if col.table and col.table.lower() in mapping:
                col.set("table", exp.to_identifier(mapping[col.table.lower()]))
            elif not col.table and only is not None and col.name.lower() not in aliases:
                col.set("table", exp.to_identifier(only))
    return tree


def _from_tables(select: exp.Select) -> list[exp.Table]:
    out = []
    from_ = select.args.get("from") or select.args.get("from_")
    if from_ is not None and isinstance(from_.this, exp.Table):
        out.append(from_.this)
    for join in select.args.get("joins") or []:
        if isinstance(join.this, exp.Table):
            out.append(join.this)
    return out


def _owning_select(node: exp.Expression) -> exp.Select | None:
    parent = node.parent
    while parent is not None and not isinstance(parent, exp.Select):
        parent = parent.parent
    return parent


def _drop_output_aliases(tree: exp.Expression) -> exp.Expression:
    """Remove aliases of the outermost projections (replacing ORDER BY references by the expression)."""
    selects = [tree] if isinstance(tree, exp.Select) else (
        [s for s in (tree.left, tree.right) if isinstance(s, exp.Select)] if isinstance(tree, exp.SetOperation) else [])
    for select in selects:
        aliases = {}
        for proj in select.expressions:
            if isinstance(proj, exp.Alias):
                aliases[proj.alias.lower()] = proj.this
        if not aliases:
            continue
        for clause in ("order", "group", "having"):
            node = select.args.get(clause)
            if node is None:
                continue
            for col in list(node.find_all(exp.Column)):
                if not col.table and col.name.lower() in aliases:
                    col.replace(aliases[col.name.lower()].copy())
        select.set("expressions", [p.this if isinstance(p, exp.Alias) else p for p in select.expressions])
    return tree


def _strip_parens(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Paren) and not isinstance(node.this, exp.Query):
        return node.this
    return node


_COMMUTATIVE = (exp.EQ, exp.NEQ, exp.Add, exp.Mul)


def _sort_commutative(node: exp.Expression) -> exp.Expression:
    if isinstance(node, (exp.And, exp.Or)):
        kind = type(node)
        operands = list(node.flatten())
        operands.sort(key=lambda e: e.sql())
        result = operands[0]
        for op in operands[1:]:
            result = kind(this=result, expression=op)
        return result
    if isinstance(node, _COMMUTATIVE):
        left, right = node.this, node.expression
        if left is not None and right is not None and left.sql() > right.sql():
            return type(node)(this=right, expression=left)
    return node
