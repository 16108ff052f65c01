"""`switch pay`: pay one QR code from a terminal, the way a wallet would."""
from __future__ import annotations

import secrets

import click

from core_ext.codes import describe, name_of


@click.command("pay")
@click.option("--qr", "qr_payload", required=True, help="The QR payload text (or @FILE to read it from a file).")
@click.option("--payer", "payer_account_id", required=True, type=click.IntRange(1, 2**64 - 1), help="Payer account id.")
@click.option("--amount", "amount_minor", default=0, show_default=True, type=click.IntRange(0, 2**64 - 1),
              help="Amount in minor units (paise, satang...); 0 takes the amount from the QR.")
@click.option("--participant", "participant_id", required=True, type=click.IntRange(1, 2**64 - 1), envvar="SWITCH_PARTICIPANT")
@click.option("--secret", required=True, envvar="SWITCH_SECRET", help="Participant secret (or env SWITCH_SECRET).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=7878, show_default=True, type=click.IntRange(1, 65535))
@click.option("--transfer-id", type=str, default=None,
              help="32 hex digits; by default a random one. Re-use it to retry the same payment safely.")
@click.option("--reference", default=None, help="Your reference for this payment.")
def pay(qr_payload, payer_account_id, amount_minor, participant_id, secret, host, port, transfer_id, reference) -> None:
    """Pay a merchant's QR code from PAYER's account."""
    from switch.client import Client, SwitchError

    if qr_payload.startswith("@"):
        with open(qr_payload[1:], encoding="utf-8") as file:
            qr_payload = file.read().strip()
    transfer = _transfer_id(transfer_id)
    try:
        with Client(host, port, participant_id, secret) as client:
            result = client.pay(transfer, payer_account_id, qr_payload, amount_minor, reference=reference)
    except (OSError, SwitchError) as error:
        raise click.ClickException(f"could not pay: {error}") from error
    click.echo(f"transfer id {transfer:032x}")
    if result.ok:
        click.echo(f"{name_of(result.code)}: paid {result.amount_minor} minor units (currency {result.ledger}) "
                   f"to {result.merchant_name}; merchant fee {result.fee_minor}")
        return
    click.echo(f"{name_of(result.code)} ({int(result.code)}): {describe(result.code)}")
    raise SystemExit(1)


def _transfer_id(text: str | None) -> int:
    if text is None:
        return int.from_bytes(secrets.token_bytes(16), "big") or 1
    try:
        value = int(text, 16)
    except ValueError:
        raise click.BadParameter("32 hex digits", param_hint="--transfer-id") from None
    if not 0 < value < 2**128 - 1:
        raise click.BadParameter("must be in 1..2^128-2", param_hint="--transfer-id")
    return value
