"""`switch review`: payments the rules held for review, decided by an operator.

A held payment is a pending transfer payer -> merchant: the funds are reserved
until an operator approves it (`post_pending`: the payment and its merchant fee
are posted), rejects it (`void_pending`: the funds return), or its review
timeout passes (the ledger voids it).  Everything goes over the protocol as an
operator participant, so it works against a running switch from anywhere.

    switch review list    --participant 9 --secret ...
    switch review approve --participant 9 --secret ... 0123...cdef
    switch review reject  --participant 9 --secret ... 0123...cdef
"""
from __future__ import annotations

import json

import click

from core_ext import limits
from core_ext.codes import Code, describe, name_of
from switch.commands.stats import operator_call, operator_options

NS_PER_SECOND = 1_000_000_000


def resolution_id(pending_id: int, verdict: bytes) -> int:
    """The post/void transfer's id, derived from the held payment's: approving (or rejecting)
    the same payment twice is idempotent -- the second answers EXISTS, never posts twice."""
    from switch.engine import derive_id

    return derive_id(b"review-" + verdict, pending_id)


@click.group("review")
def review() -> None:
    """List, approve or reject payments held for review."""


@review.command("list")
@operator_options
@click.option("--limit", default=limits.LIST_PENDING_ITEMS_MAX, show_default=True,
              type=click.IntRange(1, limits.LIST_PENDING_ITEMS_MAX), help="Held payments per page.")
@click.option("--after", "after_cursor", default=0, type=click.IntRange(0, 2**64 - 1),
              help="Start after this cursor (the `next` a previous page printed).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per held payment.")
def list_command(host, port, participant_id, secret, limit, after_cursor, as_json) -> None:
    """One page of held payments, oldest first: payer, merchant, amount, age, timeout, rules."""
    page = operator_call(host, port, participant_id, secret, "list_pending", after_cursor, limit)
    if as_json:
        for item in page["items"]:
            click.echo(json.dumps({**item, "transfer_id": item["transfer_id"].hex()}))
        return
    click.echo(f"{page['total']} held for review")
    if page["items"]:
        click.echo(f"{'transfer id':<32}  {'payer':>10} {'merchant':>10} {'amount_minor':>14} {'ledger':>6} "
                   f"{'age':>6} {'timeout':>7} {'expires in':>10}  rules")
    for item in page["items"]:
        click.echo(format_item(item, page["now_ns"]))
    if page["next"] is not None:
        click.echo(f"more: --after {page['next']}")


def format_item(item: dict, now_ns: int) -> str:
    expires = _duration(item["expires_ns"] - now_ns) if item["expires_ns"] else "never"
    timeout = _duration(item["timeout_seconds"] * NS_PER_SECOND) if item["timeout_seconds"] else "none"
    return (f"{item['transfer_id'].hex():<32}  {item['payer_account_id']:>10} {item['merchant_account_id']:>10} "
            f"{item['amount_minor']:>14,} {item['ledger']:>6} {_duration(item['age_ns']):>6} {timeout:>7} "
            f"{expires:>10}  {','.join(item['rules']) or '-'}")


def _duration(nanoseconds: int) -> str:
    seconds = max(0, nanoseconds) // NS_PER_SECOND
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172_800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86_400}d"


def _pending_ids(texts: tuple[str, ...]) -> list[int]:
    ids = []
    for text in texts:
        try:
            value = int(text, 16)
        except ValueError:
            raise click.BadParameter(f"{text!r}: 32 hex digits", param_hint="TRANSFER_ID") from None
        if not 0 < value < 2**128 - 1:
            raise click.BadParameter(f"{text!r}: must be in 1..2^128-2", param_hint="TRANSFER_ID")
        ids.append(value)
    return ids


def _decide(host, port, participant_id, secret, transfer_ids, method: str, verdict: bytes) -> None:
    pending_ids = _pending_ids(transfer_ids)
    items = [(resolution_id(pending_id, verdict), pending_id) for pending_id in pending_ids]
    args = [(transfer_id, pending_id, 0) for transfer_id, pending_id in items] if method == "post_pending" else items
    codes = operator_call(host, port, participant_id, secret, method, args)
    failed = 0
    for pending_id, code in zip(pending_ids, codes):
        done = code in (Code.OK, Code.EXISTS)
        failed += not done
        click.echo(f"{pending_id:032x}  {name_of(code)}" + ("" if done else f" ({int(code)}): {describe(code)}"))
    if failed:
        raise SystemExit(1)


@review.command("approve")
@operator_options
@click.argument("transfer_ids", nargs=-1, required=True)
def approve(host, port, participant_id, secret, transfer_ids) -> None:
    """Post held payments (payment and merchant fee); TRANSFER_IDS as `review list` prints them."""
    _decide(host, port, participant_id, secret, transfer_ids, "post_pending", b"approve")


@review.command("reject")
@operator_options
@click.argument("transfer_ids", nargs=-1, required=True)
def reject(host, port, participant_id, secret, transfer_ids) -> None:
    """Void held payments: the reserved funds return to the payer, no fee is taken."""
    _decide(host, port, participant_id, secret, transfer_ids, "void_pending", b"reject")
