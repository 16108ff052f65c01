"""`make run`: the switch with demo participants, payers, merchants and their QR codes.

    python -m switch.demo --data var [--port 7878] [--no-story]

Writes every demo merchant's QR payload to DATA/qr/<merchant>.txt (and a PNG to
scan), prints the participants with their (demo) secrets and a `switch pay`
line to try at once, serves on 127.0.0.1, and plays a short story of payments
against itself: a tuk-tuk ride in Bangkok, a cinema ticket in Makati, a temple
donation in Varanasi, groceries in Pune and Yogyakarta -- and a few payments the
switch refuses.  Stop with Ctrl-C.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import pathlib
import sys
from typing import NamedTuple

from core_ext import qr_tables
from core_ext.codes import Code, describe, name_of

DEMO_DIR = pathlib.Path(__file__).resolve().parent / "demo"
CONFIG_NAME = "switch.toml"
# Prometheus metrics of `make run` (9464: the exporters' customary range).
DEMO_METRICS_PORT = 9464
RULES_NAME = "rules.toml"          # named by switch.toml's `rules`; copied beside it so an operator may edit it
# The demo's dynamic QR codes stay valid this long (for the profiles that carry an expiry).
DYNAMIC_QR_LIFETIME_S = 24 * 3600


class DemoMerchant(NamedTuple):
    slug: str
    story: str
    profile: str
    scheme: str
    merchant_id: str
    name: str
    city: str
    mcc: str
    currency: int
    country: str
    account_id: int
    amount_minor: int | None = None      # printed on the code (dynamic) or None (static)
    reference: str = ""


MERCHANTS = [
    DemoMerchant("tuktuk-bangkok", "a tuk-tuk ride (static PromptPay sticker on the seat)", "promptpay", "promptpay",
                 "0066812345678", "Somsak Tuk-Tuk", "Bangkok", "4121", 764, "TH", 5001),
    DemoMerchant("cinema-makati", "a cinema ticket (dynamic QR Ph on the kiosk)", "qrph", "qrph",
                 "BOPIPHMM:MERCH0007832", "Ayala Cinema 3", "Makati", "7832", 608, "PH", 5002,
                 amount_minor=35000, reference="TKT-0042"),
    DemoMerchant("temple-varanasi", "a donation (UPI sticker on the merit box)", "upi", "upi",
                 "kashitemple@okaxis", "Shri Kashi Temple Trust", "Varanasi", "8661", 356, "IN", 5003),
    DemoMerchant("grocery-pune", "groceries (Bharat QR at the kirana counter)", "bharatqr", "upi",
                 "sharmakirana@ybl", "Sharma Kirana", "Pune", "5411", 356, "IN", 5004),
    DemoMerchant("grocery-yogyakarta", "groceries (QRIS at the warung)", "qris", "qris",
                 "ID1020210000042", "Warung Bu Sri", "Yogyakarta", "5411", 360, "ID", 5005),
]


def make_payloads(data_dir: pathlib.Path) -> dict[str, str]:
    """Each demo merchant's payload, written to DATA/qr/<slug>.txt and .png for a phone to scan."""
    from switch import qrmake

    qr_dir = data_dir / "qr"
    qr_dir.mkdir(parents=True, exist_ok=True)
    payloads = {}
    for merchant in MERCHANTS:
        spec = qrmake.QrSpec(
            profile=merchant.profile, merchant_id=merchant.merchant_id, name=merchant.name, city=merchant.city,
            mcc=merchant.mcc, currency=merchant.currency, country=merchant.country,
            amount_minor=merchant.amount_minor, dynamic=merchant.amount_minor is not None,
            reference=merchant.reference)
        payload = qrmake.make_payload(spec)
        (qr_dir / f"{merchant.slug}.txt").write_text(payload + "\n")
        try:
            qrmake.write_symbol(payload, qr_dir / f"{merchant.slug}.png")
        except Exception as error:   # a missing image library must not stop the demo
            logging.getLogger("switch.demo").warning("no PNG for %s: %s", merchant.slug, error)
        payloads[merchant.slug] = payload
    return payloads


def merchant_registrations() -> list[dict]:
    """The [[merchants]] entries of the demo config: keyword arguments of MerchantDirectory.register."""
    return [dict(scheme=m.scheme, merchant_id=m.merchant_id, account_id=m.account_id, name=m.name, mcc=m.mcc,
                 country=m.country, currency=m.currency) for m in MERCHANTS]


def format_minor(amount_minor: int, currency: int) -> str:
    """Integer minor units as decimal text, by integer arithmetic only."""
    exponent = qr_tables.CURRENCY_EXPONENTS.get(currency, 2)
    if exponent == 0:
        return f"{amount_minor:,}"
    whole, fraction = divmod(amount_minor, 10**exponent)
    return f"{whole:,}.{fraction:0{exponent}d}"


CURRENCY_NAMES = {764: "THB", 608: "PHP", 356: "INR", 360: "IDR"}


def print_welcome(config, data_dir: pathlib.Path, port: int) -> None:
    out = sys.stdout.write
    out("\n=== QR payment switch: demo ===\n\n")
    out(f"data directory : {data_dir}/   (delete it to start over)\n")
    out(f"configuration  : {data_dir / CONFIG_NAME}\n\n")
    out("Participants (DEMO secrets; never reuse them):\n")
    for participant in config.participants.values():
        ranges = ", ".join(f"{start}-{end}" for start, end in zip(participant.range_starts, participant.range_ends))
        out(f"  id {participant.id:<3} {participant.role:<8} {participant.name:<28} secret {participant.secret.decode()}"
            f"   accounts {ranges or '-'}\n")
    out("\nPayers:\n")
    for account in config.accounts:
        if account.code == 1:
            currency = CURRENCY_NAMES.get(account.ledger, str(account.ledger))
            out(f"  account {account.id}  participant {account.owner}  KYC tier {account.kyc_tier}  opening balance "
                f"{currency} {format_minor(account.opening_balance_minor, account.ledger)}\n")
    out("\nMerchants and their QR codes:\n")
    for merchant in MERCHANTS:
        amount = (f"  amount {CURRENCY_NAMES[merchant.currency]} {format_minor(merchant.amount_minor, merchant.currency)}"
                  if merchant.amount_minor else "")
        out(f"  {merchant.slug:<20} {merchant.profile:<9} MCC {merchant.mcc}  {merchant.story}{amount}\n"
            f"  {'':<20} {data_dir / 'qr' / (merchant.slug + '.txt')} (+ .png)\n")
    out("\nPay the tuk-tuk driver THB 60.00 from Somchai's wallet (another terminal):\n\n")
    out(f"  .venv/bin/python -m switch pay --port {port} --participant 1 --secret demo-siampay-secret-0001 \\\n"
        f"      --payer 1001 --amount 6000 --qr @{data_dir / 'qr' / 'tuktuk-bangkok.txt'}\n\n")


class StoryStep(NamedTuple):
    participant_id: int
    transfer_id: int
    payer_account_id: int
    slug: str
    amount_minor: int
    says: str


# Fixed transfer ids: running the demo again retries the same payments, which the
# switch answers EXISTS instead of paying twice -- idempotency, visible.
STORY = [
    StoryStep(1, 0xD3110001, 1001, "tuktuk-bangkok", 6000, "Somchai pays the tuk-tuk THB 60.00"),
    StoryStep(2, 0xD3110002, 2001, "cinema-makati", 0, "Maria scans the cinema kiosk (amount on the code)"),
    StoryStep(2, 0xD3110003, 2001, "cinema-makati", 0, "...and scans the same dynamic code again (a replay)"),
    StoryStep(3, 0xD3110004, 3001, "temple-varanasi", 50100, "Priya donates INR 501.00 at the temple"),
    StoryStep(3, 0xD3110005, 3002, "grocery-pune", 25000, "Arjun (minimum KYC, INR 100.00) tries INR 250.00 of groceries"),
    StoryStep(4, 0xD3110006, 4001, "grocery-yogyakarta", 4500000, "Dewi buys IDR 45,000.00 of groceries"),
    # The rule set's limits are in INR: IDR 1,500,000.00 is about INR 7,875, over a minimum-KYC wallet's INR 5,000 on day one.
    StoryStep(4, 0xD3110009, 4002, "grocery-yogyakarta", 150000000,
              "Budi (minimum KYC, new wallet) tries IDR 1,500,000.00 of groceries"),
    StoryStep(1, 0xD3110007, 1002, "tuktuk-bangkok", 15000, "Nok (THB 40.00 in her wallet) takes a THB 150.00 ride"),
    StoryStep(1, 0xD3110008, 2001, "tuktuk-bangkok", 100, "SiamPay tries to debit Maria's account (not its own)"),
]


async def play_story(config, port: int, payloads: dict[str, str]) -> None:
    from switch.client import AsyncClient

    sys.stdout.write("A few payments, through the real protocol:\n\n")
    clients: dict[int, AsyncClient] = {}
    try:
        for step in STORY:
            client = clients.get(step.participant_id)
            if client is None:
                secret = config.participants[step.participant_id].secret
                client = await AsyncClient("127.0.0.1", port, step.participant_id, secret).connect()
                clients[step.participant_id] = client
            result = await client.pay(step.transfer_id, step.payer_account_id, payloads[step.slug], step.amount_minor)
            verdict = name_of(result.code) if result.ok else f"{name_of(result.code)} ({int(result.code)}): {describe(result.code)}"
            if result.ok:
                currency = CURRENCY_NAMES.get(result.ledger, str(result.ledger))
                verdict += (f" -- {currency} {format_minor(result.amount_minor, result.ledger)} to {result.merchant_name},"
                            f" merchant fee {format_minor(result.fee_minor, result.ledger)}")
            sys.stdout.write(f"  {step.says}\n      -> {verdict}\n")
    finally:
        for client in clients.values():
            await client.close()
    sys.stdout.write("\nThe switch keeps serving on 127.0.0.1:%d. Ctrl-C stops it (gracefully).\n" % port)


def prepare_config(data_dir: pathlib.Path) -> pathlib.Path:
    """The demo config and rule set in DATA (kept if they exist, so an operator may edit them)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    rules_target = data_dir / RULES_NAME
    if not rules_target.exists():
        rules_target.write_text((DEMO_DIR / RULES_NAME).read_text())
    target = data_dir / CONFIG_NAME
    if not target.exists():
        text = (DEMO_DIR / CONFIG_NAME).read_text()
        text += "\n# ---- merchants (generated by switch/demo.py) ----\n"
        for registration in merchant_registrations():
            text += "\n[[merchants]]\n" + "".join(
                f"{key} = {value!r}\n".replace("'", '"') for key, value in registration.items())
        target.write_text(text)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m switch.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="var", help="data directory (LMDB, config, QR codes)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7878)
    parser.add_argument("--durability", choices=("fsync", "os"), default="fsync")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--no-story", action="store_true", help="serve only; do not play the demo payments")
    parser.add_argument("--metrics-port", type=int, default=DEMO_METRICS_PORT,
                        help="Prometheus metrics port (0 = off)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from switch import config as config_module
    from switch.commands.serve import run

    data_dir = pathlib.Path(args.data)
    config_path = prepare_config(data_dir)
    config = config_module.load(config_path)
    payloads = make_payloads(data_dir)

    def on_ready(address: tuple[str, int]) -> None:
        print_welcome(config, data_dir, address[1])
        sys.stdout.write(f"switch listening on {address[0]}:{address[1]}\n")
        for metrics_host, metrics_port in metrics_address:
            sys.stdout.write(f"metrics on http://{metrics_host}:{metrics_port}/metrics (Prometheus); operator view:\n"
                             f"  .venv/bin/python -m switch stats --port {address[1]} --participant 9 "
                             f"--secret demo-operator-secret-0009\n")
        sys.stdout.write("\n")
        sys.stdout.flush()
        if not args.no_story:
            asyncio.get_running_loop().create_task(play_story(config, address[1], payloads))

    metrics_address: list[tuple[str, int]] = []     # filled before on_ready runs
    run(str(config_path), str(data_dir / "lmdb"), args.host, args.port, args.durability, args.loop, on_ready=on_ready,
        metrics_port=args.metrics_port, metrics_host=args.host, on_metrics=metrics_address.append,
        metrics_optional=True)


if __name__ == "__main__":
    main()
