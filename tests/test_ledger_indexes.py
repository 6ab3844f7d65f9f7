"""What every night asks the results store is answered from an index, not by reading the whole history: the
queries the code really sends, explained by SQLite and by a real PostgreSQL 15."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from batch_job.ledger.results import Ledger
from sqlalchemy import Engine, event, text

from common.objectstore import StoredObject

HISTORY = 6_000  # rows decided and routed long ago
MOMENT = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


def a_long_history(ledger: Ledger) -> None:
    """HISTORY finished rows, and a few of each kind a night asks for."""
    ledger.register(StoredObject(f"inbox/2026-11-23/{i}.jpg", 10, MOMENT, "e") for i in range(HISTORY))
    with ledger.engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE results SET status = 'ok', category = 'Discs', probability = 0.9, run_id = 'night-1',"
                " route_to = 'sorted/Discs/x.jpg', routed_at = created_at"
            )
        )
        connection.execute(text("UPDATE results SET status = 'pending' WHERE id % 600 = 0"))
        connection.execute(text("UPDATE results SET routed_at = NULL WHERE id % 600 = 1"))
        connection.execute(text("ANALYZE"))


@contextmanager
def sent(engine: Engine) -> Iterator[list[tuple[str, object]]]:
    """The SQL statements (and their parameters) the code sends while inside."""
    statements: list[tuple[str, object]] = []

    def remember(connection, cursor, statement, parameters, context, executemany) -> None:
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", remember)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", remember)


def plan(engine: Engine, statement: str, parameters: object) -> str:
    explain = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute(explain + statement, parameters)
        return "\n".join(" ".join(map(str, row)) for row in cursor.fetchall())
    finally:
        connection.close()


def plan_of(engine: Engine, call: Callable[[], object], wanted: str) -> str:
    """The plan of the one statement `call` sends that contains `wanted`."""
    with sent(engine) as statements:
        call()
    (statement, parameters), *others = [(sql, values) for sql, values in statements if wanted in sql]
    assert not others, others
    return plan(engine, statement, parameters)


def test_the_nightly_routing_retry_reads_its_partial_index_not_the_whole_history(database_url):
    ledger = Ledger(database_url)
    a_long_history(ledger)

    assert "ix_results_unrouted" in plan_of(ledger.engine, ledger.unrouted, "routed_at IS NULL")
