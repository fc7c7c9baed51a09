"""Writing batches of events fast: binary COPY on PostgreSQL, one executemany on SQLite.

The event writer used SQLAlchemy's `table.insert()` with a dict per event (`dataclasses.asdict`,
parameter processing per value), which held it to about 10,000 exposures a second on SQLite.
Here each event becomes one tuple in the table's column order, JSON columns are encoded once
with orjson, and the batch goes to the driver in one call: `COPY ... FROM STDIN (FORMAT BINARY)`
through psycopg 3, `executemany` on sqlite3. Any other driver keeps the SQLAlchemy path. Rows
are made while the driver consumes them, so PostgreSQL parses and indexes the first rows of a
batch while Python still makes the last ones.

Binary COPY because psycopg's text COPY spent about 2.7 us of the writer thread per exposure
formatting numbers and escaping text, binary about 0.8 us, and PostgreSQL parses no text.

The rows are the same as SQLAlchemy would write them: JSON columns hold JSON text (Python None
as the JSON `null`, as SQLAlchemy's JSON type stores it), booleans as the driver adapts them.
Driver errors are raised as SQLAlchemy's (IntegrityError or DataError for a refused row, as
before); a value the binary format cannot carry (a string where a number belongs, an integer
out of the column's range) is a DataError too, as PostgreSQL itself says of such a text value.
"""

from __future__ import annotations

import json
import keyword
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import fields
from typing import Any

import orjson
import sqlalchemy as sa

from service.store.events import Exposure, Outcome, event_batches, exposures, outcomes

_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def to_json(value: Any) -> str:
    """JSON text of a column value; json.dumps for what orjson refuses (e.g. huge integers)."""
    try:
        return orjson.dumps(value, option=_ORJSON_OPTIONS).decode()
    except TypeError:
        return json.dumps(value, default=str)


def _columns(table: sa.Table, event_type: type) -> tuple[str, ...]:
    """The event's columns in the table's order, those stored as JSON last."""
    names = {f.name for f in fields(event_type)}
    present = [c for c in table.columns if c.name in names]
    plain = [c.name for c in present if not isinstance(c.type, sa.JSON)]
    return (*plain, *(c.name for c in present if isinstance(c.type, sa.JSON)))


EXPOSURE_COLUMNS = _columns(exposures, Exposure)
OUTCOME_COLUMNS = _columns(outcomes, Outcome)
_JSON = {name for name in EXPOSURE_COLUMNS if isinstance(exposures.c[name].type, sa.JSON)}


def _json_cell(value: Any) -> str:
    return "null" if value is None else "{}" if value == {} else to_json(value)


def _row_maker(columns: tuple[str, ...], json_columns: set[str]) -> Callable[[Any], tuple]:
    """A function from an event to its row: one tuple display of the event's attributes.

    Generated from the column names (as dataclasses and namedtuple generate their methods):
    the interpreter specialises each `e.name` on a slots class, where `operator.attrgetter`
    looks every attribute up from C through its descriptor. 1.0 us a row instead of 2.2-3.1
    (20 columns, two of them JSON); making rows was a quarter of the SQLite writer's time.
    The names are the table's own columns, never input.
    """
    for name in columns:
        if not name.isidentifier() or keyword.iskeyword(name):
            raise ValueError(f"column {name!r} is not an identifier")
    cells = ", ".join(f"_json(e.{c})" if c in json_columns else f"e.{c}" for c in columns)
    namespace: dict[str, Any] = {"_json": _json_cell}
    exec(f"def row(e):\n    return ({cells},)", namespace)
    row: Callable[[Any], tuple] = namespace["row"]
    return row


_Writer = Callable[[sa.Connection, sa.Table, tuple[str, ...], Iterable[tuple]], None]

exposure_row = _row_maker(EXPOSURE_COLUMNS, _JSON)
outcome_row = _row_maker(OUTCOME_COLUMNS, set())


def write(conn: sa.Connection, events: Sequence[Exposure | Outcome]) -> None:
    """Insert `events` inside the caller's transaction (one call per table)."""
    exposure_events = [e for e in events if isinstance(e, Exposure)]
    outcome_events = [e for e in events if not isinstance(e, Exposure)]
    if exposure_events:
        write_rows(conn, exposures, map(exposure_row, exposure_events))
    if outcome_events:
        write_rows(conn, outcomes, map(outcome_row, outcome_events))


class BatchAlreadyStored(Exception):
    """The batch's id is in `event_batches`: an earlier attempt at it committed."""


def claim_batch(conn: sa.Connection, batch_id: str) -> None:
    """Record `batch_id` in the caller's transaction, first: it commits with the batch or not
    at all, so retrying or replaying a batch whose commit was ambiguous stores it once.

    Raises BatchAlreadyStored when it is there already (the transaction is then unusable).
    """
    try:
        conn.execute(event_batches.insert(), {"batch_id": batch_id, "ts": time.time()})
    except sa.exc.IntegrityError as exc:
        raise BatchAlreadyStored(batch_id) from exc


def write_rows(conn: sa.Connection, table: sa.Table, rows: Iterable[tuple]) -> None:
    """Insert rows made by `exposure_row` / `outcome_row` into `table` (exposures, outcomes)."""
    columns = EXPOSURE_COLUMNS if table is exposures else OUTCOME_COLUMNS
    writer = _driver_errors_wrapped(conn, _WRITERS.get(conn.dialect.driver, _sqlalchemy))
    writer(conn, table, columns, rows)


# What a value the driver cannot adapt raises (a str for a float, an int too large): a refused
# row, like a text value PostgreSQL cannot parse, not a store that fails.
_UNADAPTABLE = (TypeError, ValueError, OverflowError)


def _driver_errors_wrapped(conn: sa.Connection, writer: _Writer) -> _Writer:
    """The driver's errors as SQLAlchemy's (IntegrityError for a refused row, as before)."""
    dbapi = conn.dialect.dbapi
    driver_error: type[Exception] = dbapi.Error if dbapi is not None else sa.exc.DBAPIError

    def wrapped(
        conn: sa.Connection, table: sa.Table, columns: tuple[str, ...], rows: Iterable[tuple]
    ) -> None:
        statement = f"bulk write into {table.name}"
        try:
            writer(conn, table, columns, rows)
        except sa.exc.DBAPIError:
            raise
        except driver_error as exc:
            raise sa.exc.DBAPIError.instance(
                statement, None, exc, driver_error, hide_parameters=True, dialect=conn.dialect
            ) from exc
        except _UNADAPTABLE as exc:
            raise sa.exc.DataError(statement, None, exc, hide_parameters=True) from exc

    return wrapped


def _sqlite(
    conn: sa.Connection, table: sa.Table, columns: tuple[str, ...], rows: Iterable[tuple]
) -> None:
    marks = ", ".join("?" * len(columns))
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks})"
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.executemany(sql, rows)
    finally:
        cursor.close()


_INT4 = range(-(2**31), 2**31)


def _copy_type(column: sa.Column) -> str:
    """The PostgreSQL type a column's values are sent as in binary COPY.

    JSON columns go as text: the binary form of `json` is its text, already encoded here.
    """
    kind = column.type
    if isinstance(kind, sa.Boolean):
        return "bool"
    if isinstance(kind, sa.BigInteger):
        return "int8"
    if isinstance(kind, sa.Integer):
        return "int4"
    if isinstance(kind, sa.Float):
        return "float8"
    return "text"


def _copy(
    conn: sa.Connection, table: sa.Table, columns: tuple[str, ...], rows: Iterable[tuple]
) -> None:
    types = [_copy_type(table.c[name]) for name in columns]
    sql = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(sql) as copy:
            copy.set_types(types)
            write_row = copy.write_row
            for row in _int4_checked(rows, [i for i, t in enumerate(types) if t == "int4"]):
                write_row(row)
    finally:
        cursor.close()


def _int4_checked(rows: Iterable[tuple], positions: list[int]) -> Iterator[tuple]:
    """The rows, refusing an integer out of int4's range (the binary dumper would wrap it)."""
    for row in rows:
        for i in positions:
            if row[i] is not None and row[i] not in _INT4:
                raise ValueError(f"{row[i]} is out of range for an integer column")
        yield row


def _sqlalchemy(
    conn: sa.Connection, table: sa.Table, columns: tuple[str, ...], rows: Iterable[tuple]
) -> None:
    """Any other driver: SQLAlchemy's insert (JSON columns decoded back for its JSON type)."""
    dicts = [dict(zip(columns, row, strict=True)) for row in rows]
    for row in dicts:
        for name in _JSON & row.keys():
            row[name] = json.loads(row[name])
    conn.execute(table.insert(), dicts)


_WRITERS: dict[str, _Writer] = {"pysqlite": _sqlite, "psycopg": _copy}
