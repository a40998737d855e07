"""``bench targets --only``: the table shows the targets of the scenarios that ran,
and a partial table is never published as the whole."""

import pytest

from bench import targets
from bench.__main__ import build_parser

EMPTY_ONLY = {"empty": {"db_queries": 0, "polls": 4_000, "polls_per_s": 1_000, "web_processes": 3}}


def parse(*argv: str):
    return targets.resolve(build_parser().parse_args(["targets", *argv]))


def test_only_the_targets_of_the_scenarios_run_are_shown():
    rows = targets.evaluate(parse("--only", "empty"), EMPTY_ONLY)

    assert rows == [
        ("an empty short poll costs no database query", "0 queries in 4,000 polls", True),
        ("≥ 2,000 empty polls/s per worker process", "500/s", False),
    ]


def test_every_scenario_runs_unless_told_otherwise():
    assert parse().only == ("waiting", "fan-out", "empty", "holding")
    assert parse("--only", "holding, waiting").only == ("waiting", "holding")


@pytest.mark.parametrize("argv", [["--only", "waitng"], ["--only", ","]])
def test_an_unknown_scenario_is_refused(argv):
    with pytest.raises(SystemExit):
        parse(*argv)


def test_a_partial_run_cannot_be_published():
    with pytest.raises(SystemExit, match="whole table"):
        parse("--only", "waiting", "--publish")
