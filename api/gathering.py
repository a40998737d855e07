"""Gathering: one statement for the like requests of a process that come at once.

A send to a group wakes the polls of every member at the same moment, and each
would read its inbox, and confirm its cursor, in database round trips of its
own. Instead a process keeps at most two statements of a kind in flight, and
the requests of that kind that come meanwhile gather for the next: a wake-up of
fifty polls costs three statements, and a request that comes alone waits for
nothing (two, so that one slow statement, a read of a device far behind, holds
up nobody). A request joins only a statement that has not started, so it is
always served by a statement that began after it asked (a poll's read after
its waiter was armed: the waiter protocol holds). Requests waiting for a
statement hold no database connection: only the one that runs it takes one.
"""

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    ARRAY,
    BigInteger,
    FromClause,
    String,
    bindparam,
    cast,
    column,
    func,
    literal,
    select,
    union_all,
)

GATHERED_MAX = 64  # requests one statement serves; more start a new gathering
STATEMENTS_IN_FLIGHT = 2

Asked = TypeVar("Asked")
Answer = TypeVar("Answer")


class _Gathering(Generic[Asked, Answer]):
    """Requests gathered for one statement; the first to join runs it on its turn."""

    def __init__(self) -> None:
        self.asked: list[Asked] = []
        self.answers: Sequence[Answer | Exception] = []
        self.failure: BaseException | None = None
        self.turn = threading.Event()  # set when it may run
        self.done = threading.Event()


class Gatherer(Generic[Asked, Answer]):
    """Serves each request with ``run``, which answers a list of them at once (an
    answer that is an exception is raised to its request alone); at most
    ``in_flight`` runs at a time, at most ``GATHERED_MAX`` requests each."""

    def __init__(
        self,
        run: Callable[[list[Asked]], Sequence[Answer | Exception]],
        in_flight: int = STATEMENTS_IN_FLIGHT,
    ) -> None:
        self._run = run
        self._most_in_flight = in_flight
        self._lock = threading.Lock()
        self._in_flight = 0
        self._queued: deque[_Gathering[Asked, Answer]] = deque()  # the last one still gathers

    def ask(self, asked: Asked) -> Answer:
        """This request's answer (or its exception, or the run's own)."""
        while True:
            gathering, index = self._join(asked)
            if index == 0:
                self._lead(gathering)
            else:
                gathering.done.wait()
            failure = gathering.failure
            if failure is None:
                break
            if isinstance(failure, Exception):
                raise failure
            # Its leader was killed (its client or its process went away): ask again.
        answer = gathering.answers[index]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def queued(self) -> int:
        """Requests waiting for a run that has not begun."""
        with self._lock:
            return sum(len(gathering.asked) for gathering in self._queued)

    def _join(self, asked: Asked) -> tuple[_Gathering[Asked, Answer], int]:
        with self._lock:
            if self._in_flight < self._most_in_flight:
                self._in_flight += 1
                gathering = _Gathering()
                gathering.turn.set()
            elif self._queued and len(self._queued[-1].asked) < GATHERED_MAX:
                gathering = self._queued[-1]
            else:
                gathering = _Gathering()
                self._queued.append(gathering)
            gathering.asked.append(asked)
            return gathering, len(gathering.asked) - 1

    def _lead(self, gathering: _Gathering[Asked, Answer]) -> None:
        try:
            gathering.turn.wait()
            gathering.answers = self._run(gathering.asked)
        except BaseException as exc:
            gathering.failure = exc
            raise
        finally:
            gathering.done.set()
            self._pass_turn(gathering)

    def _pass_turn(self, gathering: _Gathering[Asked, Answer]) -> None:
        with self._lock:
            if not gathering.turn.is_set():  # it never ran: take it out of the queue
                self._queued.remove(gathering)
            elif self._queued:
                self._queued.popleft().turn.set()
            else:
                self._in_flight -= 1


@dataclass(frozen=True)
class BoundRows:
    """Rows of integers bound into a statement, as a table named ``name``: column
    ``n`` numbers the rows from 1, the ``columns`` carry the values.

    On PostgreSQL an ``unnest`` of one array per column: one statement for any
    number of rows (prepared once, not once per number) with one parameter per
    column, each the text of an array literal (``{1,2,3}``), which psycopg sends
    as it is; a list it inspects element by element in Python. A read of 64
    polls, in the client's CPU: 0.83 ms with a parameter per value (SQLAlchemy
    and psycopg handle each in Python), 0.14 ms so; of one poll, 0.13 ms either
    way (0.18 ms with lists). SQLite has no arrays: one SELECT of bound values
    per row, in a UNION ALL built per number of rows (SQLAlchemy caches its
    compiled form; a VALUES list it compiles again on every execution).
    """

    name: str
    columns: tuple[str, ...]

    @staticmethod
    def shape(dialect_name: str, count: int) -> int | None:
        """What a statement over ``count`` rows is built for: any number of rows
        on PostgreSQL (None), else exactly ``count``."""
        return None if dialect_name == "postgresql" else count

    def table(self, shape: int | None) -> FromClause:
        if shape is None:
            # Each array bound as the text of its literal, cast (see above).
            arrays = [
                cast(bindparam(self._array_key(name), type_=String), ARRAY(BigInteger))
                for name in self.columns
            ]
            typed = [column(name, BigInteger) for name in self.columns]
            return (
                func.unnest(*arrays)
                .table_valued(*typed, with_ordinality="n")
                .render_derived(self.name)
            )
        return union_all(
            *(
                select(
                    literal(n, BigInteger).label("n"),
                    *(bindparam(f"{name}_{n}", BigInteger).label(name) for name in self.columns),
                )
                for n in range(1, shape + 1)
            )
        ).cte(self.name)

    def values(self, shape: int | None, rows: Sequence[Sequence[int]]) -> dict[str, Any]:
        """The parameters of ``table(shape)`` holding these rows (of ints only)."""
        if shape is None:
            return {
                self._array_key(name): "{" + ",".join(str(row[i]) for row in rows) + "}"
                for i, name in enumerate(self.columns)
            }
        return {
            f"{name}_{n}": value
            for n, row in enumerate(rows, 1)
            for name, value in zip(self.columns, row, strict=True)
        }

    def _array_key(self, name: str) -> str:
        return f"{self.name}_{name}s"
