"""The benchmark's ledger: the harness reports 0 lost and 0 duplicated only if it
would have seen a loss, a duplicate or a gap. Fed poll answers the way a device
would get them."""

from bench.ledger import Ledger

PHASE = "chat/long 25s"
ANN, BEN = 0, 1  # device indices


def entry(seq: int, key: str, message_id: int, conversation_seq: int) -> dict:
    return {
        "seq": seq,
        "type": "message",
        "message": {
            "id": message_id,
            "client_msg_id": key,
            "conversation_id": 7,
            "seq": conversation_seq,
        },
    }


def ledger_expecting(*keys: str) -> Ledger:
    """Ann sends each key to Ben; both devices must get it (Ann's as the echo)."""
    ledger = Ledger()
    ledger.begin_phase(PHASE, [(key, ANN, frozenset({ANN, BEN})) for key in keys])
    for key in keys:
        ledger.send_started(key, at=0.0)
    return ledger


def receive(ledger: Ledger, device: int, after: int, confirmed: int, *entries: dict) -> None:
    cursor = entries[-1]["seq"] if entries else after
    ledger.receive(device, after, confirmed, list(entries), cursor, at=1.0)


def test_every_pair_received_once_is_neither_lost_nor_duplicated():
    ledger = ledger_expecting("m1", "m2")
    receive(ledger, BEN, 0, 0, entry(1, "m1", 10, 1), entry(2, "m2", 11, 2))
    receive(ledger, ANN, 0, 0, entry(1, "m1", 10, 1), entry(2, "m2", 11, 2))

    tally = ledger.phases[PHASE]
    assert ledger.missing(PHASE) == []
    assert (tally.deliveries, tally.echoes, tally.duplicates, tally.seq_gaps) == (2, 2, 0, 0)
    assert tally.all_received.is_set()


def test_a_pair_never_received_is_missing():
    ledger = ledger_expecting("m1", "m2")
    receive(ledger, BEN, 0, 0, entry(1, "m1", 10, 1))
    receive(ledger, ANN, 0, 0, entry(1, "m1", 10, 1), entry(2, "m2", 11, 2))

    assert ledger.missing(PHASE) == [("m2", BEN)]
    assert not ledger.phases[PHASE].all_received.is_set()


def test_redelivery_before_confirming_is_allowed_after_it_is_a_duplicate():
    ledger = ledger_expecting("m1")
    receive(ledger, BEN, 0, 0, entry(1, "m1", 10, 1))
    receive(ledger, BEN, 0, 0, entry(1, "m1", 10, 1))  # the answer was lost: same again
    receive(ledger, BEN, 0, 1, entry(1, "m1", 10, 1))  # after the server confirmed seq 1

    tally = ledger.phases[PHASE]
    assert (tally.redeliveries, tally.duplicates) == (1, 1)


def test_one_client_msg_id_stored_twice_is_a_duplicate():
    ledger = ledger_expecting("m1")
    receive(ledger, BEN, 0, 0, entry(1, "m1", 10, 1))
    receive(ledger, ANN, 0, 0, entry(1, "m1", 99, 1))  # another message id for the same send

    assert ledger.phases[PHASE].duplicates == 1


def test_skipped_sequence_numbers_and_a_cursor_past_the_entries_are_caught():
    ledger = ledger_expecting("m1")
    receive(ledger, BEN, 0, 0, entry(2, "m1", 10, 1))  # seq 1 never came
    ledger.receive(BEN, 2, 2, [], cursor=5, at=1.0)  # a cursor past what was sent

    tally = ledger.phases[PHASE]
    assert (tally.seq_gaps, tally.cursor_mismatches) == (1, 1)
