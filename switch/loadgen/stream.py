"""The QR layer on the shared model: each base payment becomes one encoded `pay` item.

The base stream (model.py) fixes who pays whom how much; a second seeded stream decides, per
fresh payment, what kind of request the wallet sends (fixture.MIX_PER_MILLE_DEFAULT): a static
code with the amount in the request, a dynamic code binding the amount, a damaged code, an
unregistered merchant's code, a mismatched amount, a replayed dynamic code, or a payer account
the wallet does not own.  A retry in the base stream re-sends the earlier item byte for byte,
as a wallet retrying after a lost answer would, so the switch must answer EXISTS.

Items are msgpack-encoded `pay` argument arrays (docs/PROTOCOL.md 4.1), built once before a run.
"""
from __future__ import annotations

import collections
import hashlib
import itertools
import json
import os
import pathlib
import random
from typing import NamedTuple

import msgpack

from switch.loadgen import fixture, model

# A retried payment repeats one of the last model.RETRY_WINDOW_COUNT fresh ones; keep a margin.
_RETRY_CACHE_COUNT = 2 * model.RETRY_WINDOW_COUNT
_DYNAMIC_REPLAY_WINDOW_COUNT = 64
KINDS = ("static", "retry") + tuple(fixture.MIX_PER_MILLE_DEFAULT)


class Item(NamedTuple):
    wallet: int           # index of the wallet participant that must send it
    kind: str
    args: bytes           # the msgpack `pay` argument array
    transfer_id_offset: int   # where the 16 id bytes sit inside `args`


class StreamBuilder:
    """Turns the base stream into items; one instance per run, deterministic for a workload."""

    def __init__(self, workload: dict) -> None:
        self.workload = workload
        self.merchants = workload["merchant_table"]
        self.payer_base = {int(ledger): base for ledger, base in workload["payer_account_base"].items()}
        self.wallet_of_payer = self._wallet_lookup(workload)
        thresholds = list(itertools.accumulate(workload["mix_per_mille"].values()))
        if thresholds and thresholds[-1] > 1000:
            raise ValueError("the mix's kinds add up to more than 1000 per mille")
        self.kind_thresholds = list(zip(thresholds, workload["mix_per_mille"]))
        self.rng = random.Random(f"{workload['seed']}/switch-mix")
        self.base = model.base_payments(workload["seed"], workload["payers"], workload["merchants"])
        self.recent: collections.OrderedDict[bytes, Item] = collections.OrderedDict()
        # (payload, ledger) of recent dynamic codes: a replay pays from the payer's wallet in their currency.
        self.recent_dynamic: collections.deque[tuple[str, int]] = collections.deque(maxlen=_DYNAMIC_REPLAY_WINDOW_COUNT)
        self.packer = msgpack.Packer(use_bin_type=True)

    @staticmethod
    def _wallet_lookup(workload: dict) -> list[int]:
        lookup = [0] * workload["payers"]
        for wallet, entry in enumerate(workload["wallets"]):
            start, end = entry["payer_index_range"]
            lookup[start:end] = [wallet] * (end - start)
        return lookup

    def take(self, count: int) -> list[Item]:
        return [self.next_item() for _ in range(count)]

    def next_item(self) -> Item:
        payment = next(self.base)
        earlier = self.recent.get(payment.transfer_id)
        if earlier is not None:
            return earlier._replace(kind="retry")
        item = self._fresh(payment)
        self.recent[payment.transfer_id] = item
        if len(self.recent) > _RETRY_CACHE_COUNT:
            self.recent.popitem(last=False)
        return item

    def _kind(self) -> str:
        draw = self.rng.randrange(1000)
        for threshold, kind in self.kind_thresholds:
            if draw < threshold:
                return kind
        return "static"

    def _fresh(self, payment: model.BasePayment) -> Item:
        kind = self._kind()
        merchant = self.merchants[payment.merchant_rank - 1]
        payer_account_id = self.payer_base[merchant["ledger"]] + payment.payer_index
        payload, amount_minor = merchant["payload"], payment.amount_minor
        if kind == "invalid_qr":
            payload = damage(payload)
        elif kind == "unregistered":
            payload = self.workload["unregistered_payloads"][merchant["profile"]]
        elif kind in ("dynamic", "amount_mismatch"):
            payload = fixture.dynamic_payload(merchant, amount_minor, f"LG{payment.transfer_id.hex()[:20]}")
            self.recent_dynamic.append((payload, merchant["ledger"]))
            amount_minor = amount_minor + 1 if kind == "amount_mismatch" else 0
        elif kind == "qr_replay" and self.recent_dynamic:
            payload, ledger = self.recent_dynamic[self.rng.randrange(len(self.recent_dynamic))]
            payer_account_id = self.payer_base[ledger] + payment.payer_index
            amount_minor = 0
        elif kind == "qr_replay":
            kind = "static"  # nothing to replay yet
        elif kind == "not_owned":
            payer_account_id = self.workload["unowned_account_id"]
        device_id = f"dev-{payment.payer_index}"
        args = self.packer.pack([payment.transfer_id, payer_account_id, payload, amount_minor, device_id])
        return Item(self.wallet_of_payer[payment.payer_index], kind, args, _ID_OFFSET_IN_ARGS)


# The args array header (1 byte) and the bin8 header of the id (2 bytes) precede the id.
_ID_OFFSET_IN_ARGS = 3


def damage(payload: str) -> str:
    """A payload a scanner could have misread: EMVCo gets a wrong CRC, UPI loses its VPA's '@'."""
    if payload.startswith("upi:"):
        return payload.replace("@", "", 1)
    last = payload[-1]
    return payload[:-1] + ("0" if last != "0" else "1")


def build_items(workload: dict, count: int, cache_dir: str | pathlib.Path | None = None) -> list[Item]:
    """The first `count` items; with `cache_dir`, read from / saved to a cache file there, since
    building costs tens of microseconds an item (dynamic codes are made and validated one by one)
    and every run of a workload needs the same items."""
    if cache_dir is None:
        return StreamBuilder(workload).take(count)
    digest = hashlib.sha256(json.dumps(workload, sort_keys=True).encode()).hexdigest()[:16]
    path = pathlib.Path(cache_dir) / f"stream-{digest}-{count}.msgpack"
    if path.exists():
        return [Item(*fields) for fields in msgpack.unpackb(path.read_bytes(), use_list=False)]
    items = StreamBuilder(workload).take(count)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    partial.write_bytes(msgpack.packb([tuple(item) for item in items], use_bin_type=True))
    partial.replace(path)  # atomic: a concurrent or interrupted run never reads half a file
    return items
