"""SQL with sqlglot: transpiling to the engine's dialect, the lake tables and views a statement reads, and
``MERGE INTO … USING … WHEN …`` statements turned into Delta merges."""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
from sqlglot import exp

from tarn.errors import ConfigError
from tarn.pipelines.loads import MergePlan
from tarn.pipelines.spec import TABLE_ZONES, MergeClause


def parse(sql: str, dialect: str, where: str) -> list[exp.Expr]:
    try:
        stmts = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except sqlglot.errors.ParseError as e:
        first = str(e).splitlines()[0] if str(e) else "syntax error"
        raise ConfigError(f"{where}: the SQL does not parse ({dialect}): {first}", hint="fix the SQL") from None
    if not stmts:
        raise ConfigError(f"{where}: the SQL is empty")
    return stmts


def parse_one(sql: str, dialect: str, where: str) -> exp.Expr:
    stmts = parse(sql, dialect, where)
    if len(stmts) != 1:
        raise ConfigError(f"{where}: expected one SQL statement, found {len(stmts)}", hint="split it into stages")
    return stmts[0]


def transpile(sql: str, read: str, write: str, where: str) -> str:
    """``sql`` in ``write``'s dialect (unchanged when the dialects are the same)."""
    if read == write:
        return sql
    tree = parse_one(sql, read, where)
    if write == "spark":
        tree = tree.transform(_spark_range)
    return tree.sql(dialect=write)


def _spark_range_array(series: exp.GenerateSeries) -> exp.Expr:
    """DuckDB's ``range(…)`` / ``generate_series(…)`` as a list (``unnest(range(5))``, ``list_sum(range(…))``) in
    Spark: a BIGINT array with DuckDB's elements. sqlglot's ``SEQUENCE(start, end - 1)`` is INT, drops the last
    element of a stepped range (``range(1, 10, 2)`` ends at 7) and is not empty for an empty range."""
    start = series.args.get("start") or exp.Literal.number(0)
    step = series.args.get("step") or exp.Literal.number(1)
    s, e, st = (f"CAST({x.sql(dialect='spark')} AS BIGINT)" for x in (start, series.args["end"], step))
    if series.args.get("is_end_exclusive"):
        empty = f"({st} > 0 AND {s} >= {e}) OR ({st} < 0 AND {s} <= {e})"
        body = f"FILTER(SEQUENCE({s}, {e}, {st}), __tarn_i -> __tarn_i <> {e})"
    else:
        empty = f"({st} > 0 AND {s} > {e}) OR ({st} < 0 AND {s} < {e})"
        body = f"SEQUENCE({s}, {e}, {st})"
    return sqlglot.parse_one(f"IF({empty}, CAST(ARRAY() AS ARRAY<BIGINT>), {body})", read="spark")


def _spark_range(node: exp.Expr) -> exp.Expr:
    """DuckDB's ``range(…)`` / ``generate_series(…)`` in FROM as Spark's ``range(start, end, step)`` (a BIGINT
    column ``id``, renamed to DuckDB's column name: the alias's column, else ``range`` / ``generate_series``).
    sqlglot writes these as ``EXPLODE(SEQUENCE(…))``, which loses the column name and the alias's columns and
    gets a stepped exclusive end wrong (``range(1, 10, 2)`` would stop at 7)."""
    if isinstance(node, exp.GenerateSeries) and not isinstance(node.parent, exp.Table):
        return _spark_range_array(node)
    if not (isinstance(node, exp.Table) and isinstance(node.this, exp.GenerateSeries)):
        return node
    series = node.this
    start = series.args.get("start") or exp.Literal.number(0)
    step = series.args.get("step") or exp.Literal.number(1)
    end = series.args["end"]
    exclusive = bool(series.args.get("is_end_exclusive"))
    if not exclusive:  # generate_series includes its end; Spark's range does not
        end = exp.Add(
            this=exp.Paren(this=end.copy()),
            expression=exp.If(this=exp.GT(this=step.copy(), expression=exp.Literal.number(0)),
                              true=exp.Literal.number(1), false=exp.Literal.number(-1)),
        )  # fmt: skip
    alias = node.args.get("alias")
    columns = alias.columns if isinstance(alias, exp.TableAlias) else []
    name = columns[0].name if columns else ("range" if exclusive else "generate_series")
    call = exp.Anonymous(this="range", expressions=[start.copy(), end, step.copy()])
    select = exp.select(exp.alias_(exp.column("id"), name, quoted=True)).from_(exp.Table(this=call))
    table_alias = alias.this if isinstance(alias, exp.TableAlias) and alias.this else None
    return exp.Subquery(this=select, alias=exp.TableAlias(this=table_alias.copy()) if table_alias else None)


def transpile_expr(text: str, read: str, write: str, where: str) -> str:
    """A boolean / scalar expression (an expectation's check, a predicate) in ``write``'s dialect."""
    if read == write:
        return text
    try:
        return sqlglot.parse_one(text, read=read, into=exp.Condition).sql(dialect=write)
    except sqlglot.errors.ParseError as e:
        raise ConfigError(f"{where}: the expression does not parse: {str(e).splitlines()[0]}") from None


def is_query(stmt: exp.Expr) -> bool:
    return isinstance(stmt, exp.Query)


@dataclass(frozen=True)
class References:
    """What a statement reads: lake tables (``zone.table``) and bare names (views of the run)."""

    tables: tuple[str, ...]
    names: tuple[str, ...]


def references(stmts: list[exp.Expr]) -> References:
    tables: list[str] = []
    names: list[str] = []
    for stmt in stmts:
        ctes = {c.alias_or_name for c in stmt.find_all(exp.CTE)}
        merge_target = stmt.this if isinstance(stmt, exp.Merge) else None
        for t in stmt.find_all(exp.Table):
            if t is merge_target or not t.name:
                continue
            if t.db:
                if t.db in TABLE_ZONES and not t.catalog:
                    key = f"{t.db}.{t.name}"
                    if key not in tables:
                        tables.append(key)
            elif t.name not in ctes and t.name not in names and not isinstance(t.this, exp.Func):
                names.append(t.name)
    return References(tuple(tables), tuple(names))


# ------------------------------------------------------------------------------------------------ MERGE
@dataclass(frozen=True)
class MergeStatement:
    """A parsed ``MERGE INTO``: the target's name, the source as a SELECT (engine dialect), the merge plan."""

    target: str  # "zone.table" or a view name
    source_sql: str
    plan: MergePlan


def _delta_sql(e: exp.Expr) -> str:
    """An expression for delta-rs (DataFusion SQL): generic dialect, identifiers that are not lower case quoted
    (DataFusion folds unquoted names to lower case)."""
    e = e.copy()
    for ident in e.find_all(exp.Identifier):
        if ident.this != ident.this.lower():
            ident.set("quoted", True)
    return e.sql()


def _column_name(e: exp.Expr, where: str) -> str:
    if isinstance(e, exp.Column):
        return e.name
    raise ConfigError(f"{where}: {e.sql()!r} is not a column name")


def parse_merge(stmt: exp.Merge, *, dialect: str, engine_dialect: str, where: str) -> MergeStatement:
    target = stmt.this
    if not isinstance(target, exp.Table):
        raise ConfigError(f"{where}: MERGE INTO needs a table or view name")
    target_name = f"{target.db}.{target.name}" if target.db else target.name
    target_alias = target.alias or target.name
    using = stmt.args.get("using")
    if isinstance(using, exp.Table):
        source_alias = using.alias or using.name
        name = exp.table_(using.name, db=using.db or None)
        source_sql = exp.select("*").from_(name).sql(dialect=engine_dialect)
    elif isinstance(using, exp.Subquery):
        source_alias = using.alias
        if not source_alias:
            raise ConfigError(f"{where}: MERGE … USING (subquery) needs an alias")
        source_sql = using.this.sql(dialect=engine_dialect)
    else:
        raise ConfigError(f"{where}: MERGE … USING must name a view or a (subquery) with an alias")
    on = stmt.args.get("on")
    if on is None:
        raise ConfigError(f"{where}: MERGE needs an ON condition")
    matched: list[MergeClause] = []
    not_matched: list[MergeClause] = []
    by_source: list[MergeClause] = []
    whens = stmt.args.get("whens")
    for w in whens.expressions if whens is not None else []:
        cond = w.args.get("condition")
        condition = _delta_sql(cond) if cond is not None else None
        then = w.args.get("then")
        if isinstance(then, exp.Update):
            if len(then.expressions) == 1 and isinstance(then.expressions[0], exp.Star):
                sets = None
            else:
                sets = {
                    _column_name(eq.this, where): _delta_sql(eq.expression)
                    for eq in then.expressions
                    if isinstance(eq, exp.EQ)
                }
            clause = MergeClause(action="update", condition=condition, set=sets)
        elif isinstance(then, exp.Insert):
            if isinstance(then.this, exp.Star):
                clause = MergeClause(action="insert", condition=condition)
            else:
                cols = [_column_name(c, where) for c in then.this.expressions]
                vals = then.expression.expressions if then.expression is not None else []
                if len(cols) != len(vals):
                    raise ConfigError(f"{where}: INSERT has {len(cols)} columns and {len(vals)} values")
                clause = MergeClause(
                    action="insert",
                    condition=condition,
                    set={c: _delta_sql(v) for c, v in zip(cols, vals, strict=True)},
                )
        elif isinstance(then, exp.Var) and then.name.upper() == "DELETE":
            clause = MergeClause(action="delete", condition=condition)
        else:
            raise ConfigError(f"{where}: unsupported WHEN action {then.sql() if then is not None else '?'}")
        if w.args.get("matched"):
            if clause.action == "insert":
                raise ConfigError(f"{where}: WHEN MATCHED cannot INSERT")
            matched.append(clause)
        elif w.args.get("source"):
            if clause.action == "insert":
                raise ConfigError(f"{where}: WHEN NOT MATCHED BY SOURCE cannot INSERT")
            by_source.append(clause)
        else:
            if clause.action != "insert":
                raise ConfigError(f"{where}: WHEN NOT MATCHED can only INSERT")
            not_matched.append(clause)
    plan = MergePlan(
        predicate=_delta_sql(on),
        matched=tuple(matched),
        not_matched=tuple(not_matched),
        not_matched_by_source=tuple(by_source),
        source_alias=source_alias,
        target_alias=target_alias,
    )
    return MergeStatement(target_name, source_sql, plan)
