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
from typing import Any, Generic, TypeVar

from sqlalchemy import CTE, BigInteger, Integer, bindparam, literal, select, union_all

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


def bound_rows(name: str, count: int, columns: Sequence[str]) -> CTE:
    """A CTE of ``count`` rows of bound integers: row ``n`` has column ``n`` = n and
    each of ``columns`` bound to the parameter ``{column}_{n}`` (a BIGINT).

    One SELECT of bound values per row: SQLAlchemy caches the compiled form of
    a UNION ALL, and compiles a VALUES list again on every execution.
    """
    return union_all(
        *(
            select(
                literal(n, Integer).label("n"),
                *(bindparam(f"{column}_{n}", type_=BigInteger).label(column) for column in columns),
            )
            for n in range(count)
        )
    ).cte(name)


def bound_values(rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> dict[str, Any]:
    """The parameters of ``bound_rows(…, len(rows), columns)`` for these rows."""
    return {
        f"{column}_{n}": value
        for n, row in enumerate(rows)
        for column, value in zip(columns, row, strict=True)
    }
