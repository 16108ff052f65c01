"""Payments held for review: the operator's queue, a journaled component named "review".

A payment the rules hold is posted as a pending transfer (the funds are
reserved).  The ledger knows the transfer but not why it was held, nor which
pending transfers an operator still has to decide, so the engine tells this
queue: `hold` when a held payment's pending leg is posted, `resolve` when a
post or void of it succeeds (or the ledger expired it).  `list_pending`
pages through what is left, oldest first.

Journal (docs/INTERNALS.md, journaled state): one version byte, then a msgpack
array of records, each
    [1, transfer_id: bin16, cursor: uint, held_ns: uint, participant_id: uint, [rule_id: str, ...]]   hold
    [2, transfer_id: bin16]                                                                            resolve
`cursor` is a sequence number assigned at hold time, strictly increasing, and
the pagination key of `list_pending`: a page starts after a cursor, so entries
resolved while an operator pages never shift the pages still to come.
"""
from __future__ import annotations

import bisect
import hashlib
from typing import Any, NamedTuple

import msgpack

from core_ext import limits

JOURNAL_VERSION = 1
RECORD_HOLD = 1
RECORD_RESOLVE = 2
ID_BYTES = 16


class Held(NamedTuple):
    transfer_id: int
    cursor: int
    held_ns: int
    participant_id: int
    rule_ids: tuple


class ReviewQueue:
    name = "review"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._by_id: dict[int, Held] = {}
        self._id_by_cursor: dict[int, int] = {}
        # Cursors in order; resolved ones stay until compaction (lazy deletion keeps resolve O(1)).
        self._cursors: list[int] = []
        self._cursor_last = 0
        self._journal: list[list] = []

    def __len__(self) -> int:
        return len(self._by_id)

    # ---- changes (called by the engine inside a batch) ------------------------------

    def hold(self, transfer_id: int, held_ns: int, participant_id: int, rule_ids: tuple = ()) -> None:
        if transfer_id in self._by_id:
            return          # a retry of a held payment answers EXISTS; it is held once
        rule_ids = tuple(str(rule_id) for rule_id in rule_ids[:limits.RULES_PER_SET_MAX])
        cursor = self._cursor_last + 1
        record = [RECORD_HOLD, transfer_id.to_bytes(ID_BYTES, "big"), cursor, held_ns, participant_id, list(rule_ids)]
        self._apply(record)
        self._journal.append(record)

    def resolve(self, transfer_id: int) -> None:
        if transfer_id not in self._by_id:
            return
        record = [RECORD_RESOLVE, transfer_id.to_bytes(ID_BYTES, "big")]
        self._apply(record)
        self._journal.append(record)

    def _apply(self, record: list) -> None:
        kind, transfer_id = record[0], int.from_bytes(record[1], "big")
        if kind == RECORD_HOLD:
            _, _, cursor, held_ns, participant_id, rule_ids = record
            if not (_all_uints(cursor, held_ns, participant_id) and isinstance(rule_ids, list)
                    and all(isinstance(rule_id, str) for rule_id in rule_ids)):
                raise ValueError("review journal: malformed hold record")
            if cursor <= self._cursor_last:
                raise ValueError(f"review journal: cursor {cursor} after {self._cursor_last}")
            self._by_id[transfer_id] = Held(transfer_id, cursor, held_ns, participant_id, tuple(rule_ids))
            self._id_by_cursor[cursor] = transfer_id
            self._cursors.append(cursor)
            self._cursor_last = cursor
        elif kind == RECORD_RESOLVE:
            held = self._by_id.pop(transfer_id, None)
            if held is None:
                raise ValueError("review journal: resolves a payment that is not held")
            del self._id_by_cursor[held.cursor]
            if len(self._cursors) > 2 * len(self._by_id) + 1024:
                self._cursors = [cursor for cursor in self._cursors if cursor in self._id_by_cursor]
        else:
            raise ValueError(f"review journal: unknown record kind {kind!r}")

    # ---- reading ----------------------------------------------------------------------

    def page(self, after_cursor: int, limit: int) -> tuple[list[Held], int | None]:
        """Up to `limit` held payments with a cursor past `after_cursor`, oldest first, and
        the cursor to ask for next (None when this page reached the end)."""
        items: list[Held] = []
        index = bisect.bisect_right(self._cursors, after_cursor)
        while index < len(self._cursors) and len(items) < limit:
            transfer_id = self._id_by_cursor.get(self._cursors[index])
            if transfer_id is not None:
                items.append(self._by_id[transfer_id])
            index += 1
        more = self._has_live_after(index)
        return items, (items[-1].cursor if items and more else None)

    def _has_live_after(self, index: int) -> bool:
        return any(cursor in self._id_by_cursor for cursor in self._cursors[index:])

    def get(self, transfer_id: int) -> Held | None:
        return self._by_id.get(transfer_id)

    def oldest(self, count: int) -> list[Held]:
        return self.page(0, count)[0]

    # ---- journaled component ------------------------------------------------------------

    def take_journal(self) -> bytes | None:
        if not self._journal:
            return None
        blob = bytes([JOURNAL_VERSION]) + msgpack.packb(self._journal, use_bin_type=True)
        self._journal = []
        return blob

    def apply_journal(self, blob: bytes) -> None:
        if not blob or blob[0] != JOURNAL_VERSION:
            raise ValueError(f"review journal: not a version {JOURNAL_VERSION} journal")
        try:
            records = msgpack.unpackb(blob[1:], raw=False, use_list=True)
        except (ValueError, msgpack.UnpackException) as error:
            raise ValueError(f"review journal: {error}") from error
        if not isinstance(records, list):
            raise ValueError("review journal: not an array of records")
        for record in records:
            if not (isinstance(record, list) and len(record) >= 2 and isinstance(record[1], bytes)
                    and len(record[1]) == ID_BYTES):
                raise ValueError("review journal: malformed record")
            self._apply(record)     # ValueError for anything else malformed (wrong arity, types, order)

    def state_hash(self) -> bytes:
        digest = hashlib.sha256()
        for held in sorted(self._by_id.values(), key=lambda entry: entry.cursor):
            digest.update(repr(tuple(held)).encode() + b"\n")
        digest.update(str(self._cursor_last).encode())
        return digest.digest()


def _all_uints(*values: Any) -> bool:
    return all(type(value) is int and value >= 0 for value in values)


def held_to_wire(held: Held, transfer: Any, now_ns: int) -> dict:
    """One list_pending item (docs/PROTOCOL.md 4.10); `transfer` is the ledger's pending transfer."""
    timeout_seconds = transfer.timeout if transfer is not None else 0
    held_ns = transfer.timestamp if transfer is not None else held.held_ns
    return {
        "transfer_id": held.transfer_id.to_bytes(ID_BYTES, "big"),
        "cursor": held.cursor,
        "participant_id": held.participant_id,
        "payer_account_id": transfer.debit_account_id if transfer is not None else 0,
        "merchant_account_id": transfer.credit_account_id if transfer is not None else 0,
        "amount_minor": transfer.amount if transfer is not None else 0,
        "ledger": transfer.ledger if transfer is not None else 0,
        "held_ns": held_ns,
        "age_ns": max(0, now_ns - held_ns),
        "timeout_seconds": timeout_seconds,
        "expires_ns": held_ns + timeout_seconds * 1_000_000_000 if timeout_seconds else 0,
        "rules": list(held.rule_ids),
    }
