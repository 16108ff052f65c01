"""`switch qr`: parse, audit and make QR payment codes.

    switch qr parse [--json] PAYLOAD      exit 0 when valid, 1 when not
    switch qr check FILE                  one JSON verdict per JSON line {"payload": ...}
    switch qr make --profile P ...        a payload for a merchant, as PNG or SVG

Expiry is checked against the current time unless --now names another (0: do not check).
"""
from __future__ import annotations

import json
import sys
import time

import click

from core_ext.codes import describe, name_of
from core_ext.qr_tables import PROFILE_COUNTRIES

# A line of a `qr check` file longer than this cannot hold a payload the switch accepts.
CHECK_LINE_BYTES_MAX = 64 * 1024


def _core():
    from core_ext import core
    return core


def _now_s(now: int | None) -> int:
    return int(time.time()) if now is None else now


def verdict_dict(result) -> dict:
    """A QR result as JSON: the verdict first, then every field."""
    out = {"valid": result.valid, "code": int(result.code), "code_name": name_of(result.code)}
    out.update({key: value for key, value in result.as_dict().items() if key not in out})
    return out


@click.group("qr")
def qr() -> None:
    """Validate and make QR payment codes (EMVCo MPM national profiles, UPI links)."""


@qr.command("parse")
@click.argument("payload")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.option("--now", type=click.IntRange(0), default=None,
              help="Unix seconds to check expiry against (default: now; 0 skips the expiry check).")
def parse(payload: str, as_json: bool, now: int | None) -> None:
    """Validate PAYLOAD and print what it says; exit 0 when valid, 1 when not."""
    result = _core().parse_qr(payload, _now_s(now))
    if as_json:
        click.echo(json.dumps(verdict_dict(result), ensure_ascii=False))
    elif result.valid:
        click.echo(f"valid {result.profile} {'dynamic' if result.dynamic else 'static'}")
        for key, value in result.as_dict().items():
            if key not in ("valid", "code", "tag", "profile", "dynamic"):
                click.echo(f"  {key}: {value}")
    else:
        where = f" at tag {result.tag}" if result.tag else ""
        click.echo(f"invalid {name_of(result.code)} ({int(result.code)}){where}: {describe(result.code)}")
    sys.exit(0 if result.valid else 1)


@qr.command("check")
@click.argument("file", type=click.File("rb"))
@click.option("--now", type=click.IntRange(0), default=None,
              help="Unix seconds to check expiry against (default: now; 0 skips the expiry check).")
def check(file, now: int | None) -> None:
    """Audit FILE of JSON lines holding a "payload" (- for stdin): one JSON verdict per line.

    Exit 0 when every payload is valid, 1 otherwise.
    """
    core, now_s, all_valid = _core(), _now_s(now), True
    for number, raw in enumerate(_bounded_lines(file), start=1):
        if not raw.strip():
            continue
        verdict = _check_line(core, raw, now_s)
        verdict = {"line": number, **verdict}
        all_valid = all_valid and verdict["valid"]
        click.echo(json.dumps(verdict, ensure_ascii=False))
    sys.exit(0 if all_valid else 1)


def _bounded_lines(file):
    """The file's lines, never holding more than CHECK_LINE_BYTES_MAX + 1 bytes of one in memory.

    A longer line is yielded cut at that size (and judged too long); the rest of it is skipped.
    """
    while True:
        line = file.readline(CHECK_LINE_BYTES_MAX + 1)
        if not line:
            return
        if len(line) > CHECK_LINE_BYTES_MAX and not line.endswith(b"\n"):
            rest = line
            while rest and not rest.endswith(b"\n"):
                rest = file.readline(CHECK_LINE_BYTES_MAX)
        yield line


def _check_line(core, raw: bytes, now_s: int) -> dict:
    if len(raw) > CHECK_LINE_BYTES_MAX:
        return {"valid": False, "error": f"line longer than {CHECK_LINE_BYTES_MAX} bytes"}
    try:
        record = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return {"valid": False, "error": f"not JSON: {error}"}
    if not isinstance(record, dict) or not isinstance(record.get("payload"), str):
        return {"valid": False, "error": 'expected an object with a string "payload"'}
    return verdict_dict(core.parse_qr(record["payload"], now_s))


@qr.command("make")
@click.option("--profile", required=True, type=click.Choice(
    ["emvco", "promptpay", "paynow", "sgqr", "duitnow", "qris", "qrph", "vietqr", "khqr", "pix", "bharatqr", "upi"]))
@click.option("--merchant-id", required=True, help="The merchant identifier (form per profile: see switch/qrmake.py).")
@click.option("--name", default=None, help="Merchant name (ans, up to 25 characters).")
@click.option("--city", default="", help="Merchant city (ans, up to 15 characters).")
@click.option("--mcc", default=None, help="Merchant category code, 4 digits.")
@click.option("--currency", type=click.IntRange(1, 999), default=None, help="ISO 4217 numeric (default: the profile's).")
@click.option("--country", default=None, help="ISO 3166 alpha-2 (default: the profile's).")
@click.option("--amount-minor", type=click.IntRange(1), default=None, help="Fixed amount in minor units.")
@click.option("--dynamic", is_flag=True, help="A single-use code (point of initiation 12).")
@click.option("--reference", default="", help="Reference label (62.05; UPI tr).")
@click.option("--guid", default="com.example.switch", show_default=True, help="emvco profile: the template GUID.")
@click.option("--expiry", "expiry_s", type=click.IntRange(0), default=None, help="Expiry, Unix seconds (PayNow, KHQR).")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="switch.toml: refuse unless the code names a merchant registered there (and default name/mcc from it).")
@click.option("--out", type=click.Path(dir_okay=False, writable=True), default=None, help="Write the symbol: FILE.png or FILE.svg.")
def make(profile, merchant_id, name, city, mcc, currency, country, amount_minor, dynamic, reference, guid,
         expiry_s, config_path, out) -> None:
    """Make a valid payload for a merchant and print it; with --out, also the QR symbol for the poster."""
    from switch.qrmake import QrMakeError, QrSpec, make_payload, write_symbol

    registered = _registered(config_path) if config_path else None
    spec = QrSpec(profile=profile, merchant_id=merchant_id, name=name or "", city=city or "", mcc=mcc or "0000",
                  currency=currency, country=country, amount_minor=amount_minor, dynamic=dynamic,
                  reference=reference, guid=guid, expiry_s=expiry_s, now_s=int(time.time()))
    try:
        if registered is not None:
            spec = _from_registration(spec, registered)
        payload = make_payload(spec)
        if out:
            write_symbol(payload, out)
    except QrMakeError as error:
        raise click.ClickException(str(error)) from error
    click.echo(payload)
    if out:
        click.echo(f"wrote {out}", err=True)


def _registered(config_path: str):
    from switch import config as config_module
    from switch.merchants import MerchantDirectory

    directory = MerchantDirectory()
    for entry in config_module.load(config_path).merchants:
        directory.register(**entry)
    return directory


def _from_registration(spec, directory):
    """Fill name/mcc/currency/country from the registration the code's first key resolves to."""
    import dataclasses

    from switch.qrmake import QrMakeError, make_payload

    probe = dataclasses.replace(spec, name=spec.name or "NAME", city=spec.city or "CITY",
                                country=spec.country or PROFILE_COUNTRIES.get(spec.profile))
    first_key = _core().parse_qr(make_payload(probe), 0).merchant_keys[0]
    merchant = directory.lookup(*first_key)
    if merchant is None:
        raise QrMakeError(f"no merchant registered as {first_key[0]} {first_key[1]} in the config")
    return dataclasses.replace(spec, name=spec.name or merchant.name[:25], mcc=merchant.mcc,
                               currency=merchant.currency, country=merchant.country)
