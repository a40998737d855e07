"""The plan's promise, checked delivery by delivery.

Every planned send names its ``client_msg_id`` before it is sent, so the ledger
knows which devices must receive it (every device of every member; the
sender's own device gets an "echo" entry too, so that its other devices would
sync). Each poll answer is checked as it arrives:

* **lost**: a (message, device) pair never received by the end of the drain;
* **duplicate**: a message delivered again to a device that had already
  confirmed it (polled with ``after`` at or past the entry's ``seq``), or one
  ``client_msg_id`` that became two messages;
* **redelivery**: delivered again before it was confirmed (allowed: at least once);
* **seq gap**: a batch that skips inbox sequence numbers after ``after``;
* **out of order**: an entry at or below ``after``, or a conversation's messages
  reaching one device out of conversation order;
* **cursor mismatch**: an answer whose ``cursor`` is not its last entry's ``seq``
  (or, with no entries, not ``after``), as the contract promises: a cursor that
  jumps ahead would make the device confirm entries it never saw.

Latency is measured from the moment the sender *started* its POST to the
moment the poll answer carrying the entry was read. From the 201 instead, the
fastest deliveries would be negative: the server wakes long polls right after
its commit, and a woken poll can answer before the sender reads its 201.
"""

import asyncio
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Expected:
    phase: str
    sender: int  # device index
    recipients: frozenset[int]  # device indices, the sender's own device excluded
    started_at: float | None = None  # the first attempt of the POST began
    answered_at: float | None = None  # its 201 (or replayed 200) was read
    message_id: int | None = None
    failed: bool = False


@dataclass
class Receipt:
    first_at: float
    seq: int
    message_id: int
    copies: int = 1


@dataclass
class PhaseTally:
    expected_pairs: int = 0
    received_pairs: int = 0
    deliveries: int = 0  # first receipts by recipients (not echoes)
    echoes: int = 0
    duplicates: int = 0
    redeliveries: int = 0
    seq_gaps: int = 0
    out_of_order: int = 0
    cursor_mismatches: int = 0
    stray_entries: int = 0  # entries that are no planned message (presence, joins, …)
    latencies_s: list[float] = field(default_factory=list)
    send_durations_s: list[float] = field(default_factory=list)
    failed_sends: int = 0
    replayed_sends: int = 0
    all_received: asyncio.Event = field(default_factory=asyncio.Event)


class Ledger:
    """Expected deliveries of every phase, and what each device actually received."""

    def __init__(self) -> None:
        self.expected: dict[str, Expected] = {}
        self.receipts: dict[tuple[str, int], Receipt] = {}
        self.phases: dict[str, PhaseTally] = {}
        self.current: str | None = None
        self._last_conv_seq: dict[tuple[int, int], int] = {}
        self._message_ids: dict[str, int] = {}

    def begin_phase(self, phase: str, sends: list[tuple[str, int, frozenset[int]]]) -> None:
        """``sends``: (client_msg_id, sender device, recipient devices) of the phase's plan."""
        tally = PhaseTally()
        for key, sender, recipients in sends:
            self.expected[key] = Expected(phase, sender, recipients - {sender})
            tally.expected_pairs += len(recipients | {sender})
        self.phases[phase] = tally
        self.current = phase
        if tally.expected_pairs == 0:
            tally.all_received.set()

    # The sender's side.

    def send_started(self, key: str, at: float) -> None:
        expected = self.expected[key]
        if expected.started_at is None:
            expected.started_at = at

    def send_answered(self, key: str, at: float, message_id: int, replay: bool) -> None:
        expected = self.expected[key]
        tally = self.phases[expected.phase]
        expected.answered_at = at
        expected.message_id = message_id
        if replay:
            tally.replayed_sends += 1
        if expected.started_at is not None:
            tally.send_durations_s.append(at - expected.started_at)

    def send_failed(self, key: str) -> None:
        """The send gave up: its deliveries are no longer expected (it may or may not
        have been stored, so what arrives of it is still checked)."""
        expected = self.expected[key]
        expected.failed = True
        tally = self.phases[expected.phase]
        tally.failed_sends += 1
        devices = expected.recipients | {expected.sender}
        tally.expected_pairs -= sum(1 for d in devices if (key, d) not in self.receipts)
        if tally.received_pairs >= tally.expected_pairs:
            tally.all_received.set()

    # The receiver's side.

    def receive(
        self,
        device: int,
        after: int,
        confirmed: int,
        entries: list[dict[str, Any]],
        cursor: int,
        at: float,
    ) -> None:
        """Check one poll answer of ``device`` (polled with ``after``; the server had
        confirmed ``confirmed`` before this poll) and record its messages."""
        current = self.phases.get(self.current or "")
        if current is not None and cursor != (entries[-1]["seq"] if entries else after):
            current.cursor_mismatches += 1
        if entries and current is not None and entries[0]["seq"] > after + 1:
            current.seq_gaps += 1
        previous_seq = after
        for entry in entries:
            seq = entry["seq"]
            if seq <= previous_seq and current is not None:
                current.out_of_order += 1
            previous_seq = max(previous_seq, seq)
            message = entry.get("message") if entry.get("type") == "message" else None
            key = message.get("client_msg_id") if message else None
            expected = self.expected.get(key) if key else None
            if expected is None:
                if current is not None:
                    current.stray_entries += 1
                continue
            self._receive_message(device, confirmed, expected, key, message, seq, at)

    def _receive_message(
        self,
        device: int,
        confirmed: int,
        expected: Expected,
        key: str,
        message: dict[str, Any],
        seq: int,
        at: float,
    ) -> None:
        tally = self.phases[expected.phase]
        known_id = self._message_ids.setdefault(key, message["id"])
        if known_id != message["id"]:
            tally.duplicates += 1  # one client_msg_id stored twice: idempotency broken
        receipt = self.receipts.get((key, device))
        if receipt is not None:
            receipt.copies += 1
            if receipt.seq <= confirmed:
                tally.duplicates += 1
            else:
                tally.redeliveries += 1
            return
        self.receipts[(key, device)] = Receipt(at, seq, message["id"])
        conversation = (device, message["conversation_id"])
        if message["seq"] <= self._last_conv_seq.get(conversation, 0):
            tally.out_of_order += 1
        self._last_conv_seq[conversation] = max(
            message["seq"], self._last_conv_seq.get(conversation, 0)
        )
        if device == expected.sender:
            tally.echoes += 1
        elif device in expected.recipients:
            tally.deliveries += 1
            if expected.started_at is not None:
                tally.latencies_s.append(at - expected.started_at)
        else:
            tally.stray_entries += 1
            return
        if expected.failed:
            return  # no longer counted as expected
        tally.received_pairs += 1
        if tally.received_pairs >= tally.expected_pairs:
            tally.all_received.set()

    def missing(self, phase: str) -> list[tuple[str, int]]:
        """(client_msg_id, device) pairs of the phase not received, failed sends left out."""
        gaps = []
        for key, expected in self.expected.items():
            if expected.phase != phase or expected.failed:
                continue
            for device in expected.recipients | {expected.sender}:
                if (key, device) not in self.receipts:
                    gaps.append((key, device))
        return gaps

    def latencies_from_201(self, phase: str) -> list[float]:
        """Receipt minus the sender's 201, per delivery (negative when the poll
        answered before the sender read its 201); computed at the end because
        either may come first."""
        found = []
        for (key, device), receipt in self.receipts.items():
            expected = self.expected[key]
            if (
                expected.phase == phase
                and expected.answered_at is not None
                and device in expected.recipients
            ):
                found.append(receipt.first_at - expected.answered_at)
        return found
