"""The performance bar's table (``bench targets``): with ``--only`` it shows the
targets of the scenarios that ran, and a partial table is never published."""

import argparse

import pytest

from bench import bar

EMPTY_ONLY = {
    "empty": {
        "db_queries": 0,
        "polls": 4_000,
        "polls_per_s": 1_000,
        "web_processes": 3,
        "web_cpu_s": 3.0,
    }
}


def arguments(only=bar.SCENARIOS, publish=False) -> argparse.Namespace:
    """What ``bench targets`` parses when given no sizes."""
    sizes = dict.fromkeys(bar.PROFILES["default"])
    return bar.resolve(argparse.Namespace(quick=False, publish=publish, only=only, **sizes))


def test_only_the_targets_of_the_scenarios_run_are_shown():
    rows = bar.evaluate(arguments(only=("empty",)), EMPTY_ONLY)

    assert rows == [
        ("an empty short poll costs no database query", "0 queries in 4,000 polls", True),
        (
            "≥ 2,000 empty polls/s per worker process",
            "500/s (0.75 ms of worker CPU each)",
            False,
        ),
    ]


def test_scenarios_are_named_in_any_order_and_run_in_the_bars():
    assert bar.parse_scenarios("holding, waiting") == ("waiting", "holding")


@pytest.mark.parametrize("value", ["waitng", ",", ""])
def test_an_unknown_scenario_is_refused(value):
    with pytest.raises(argparse.ArgumentTypeError):
        bar.parse_scenarios(value)


def test_a_partial_run_cannot_be_published():
    with pytest.raises(SystemExit, match="whole table"):
        arguments(only=("waiting",), publish=True)
    assert arguments(publish=True).only == bar.SCENARIOS


def holding(most_held: int) -> dict:
    """The holding scenario's record: a few polls are always between an answer
    and the next poll when the memory is read (800 re-polls a second at 20,000)."""
    return {
        "holding": {
            "most_held": most_held,
            "held": 19_954,
            "errors": 0,
            "web_pss_per_poll_bytes": 17.5 * 1024,
        }
    }


def test_the_polls_held_at_once_are_the_most_the_server_held():
    rows = bar.evaluate(arguments(only=("holding",)), holding(most_held=20_000))

    assert rows == [
        ("≤ 30 KiB per waiting long poll (20,000 held)", "17.5 KiB (19,954 held)", True),
        ("20,000 concurrent waiting long polls without errors", "20,000 held, 0 errors", True),
    ]


def test_polls_never_all_held_at_once_miss_both_targets():
    rows = bar.evaluate(arguments(only=("holding",)), holding(most_held=19_990))

    assert [met for _, _, met in rows] == [False, False]
    assert rows[1][1] == "19,990 held, 0 errors"


def test_an_empty_scenario_with_no_poll_answered_still_makes_its_row():
    nothing = {"empty": {**EMPTY_ONLY["empty"], "polls": 0, "polls_per_s": 0}}

    rows = bar.evaluate(arguments(only=("empty",)), nothing)

    assert rows[1] == ("≥ 2,000 empty polls/s per worker process", "0/s", False)
