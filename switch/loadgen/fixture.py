"""The benchmark's switch configuration and workload file, generated for N payers and M merchants.

`write_fixture(directory, spec)` writes two files:

- `switch.toml`: what `switch serve --config` reads -- wallet participants (secrets for the
  generator), one ledger per currency with its fee and settlement accounts, a funded wallet
  account per payer and currency, a settlement account per merchant, and the merchant directory
  (each merchant under one national QR profile);
- `workload.json`: what the generator processes read so they need not regenerate anything --
  the model's sizes and seed, each merchant's rank, account, profile and QR payload, the payer
  account ids per currency, the wallets' secrets and which payers each wallet owns, and the mix
  of payment kinds.

Account ids: merchant of rank r is 1,000,000 + r and payer i in the currency of ledger slot s is
100,000,001 + s * 10,000,000 + i -- slot 0 is INR, so the INR ids are the baseline's.  Every
payer holds one wallet per currency, each opened with the payer's opening balance from the
shared model (scaled by `funding_scale`, as the baseline's).  Fees: the baseline draws 0-250 bps per merchant; the switch charges one rate per
currency, so every currency gets FEE_BPS (the baseline's mean), keeping two legs per payment.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import random
import shutil

from core_ext import limits
from core_ext import qr_tables
from switch import qrmake
from switch.loadgen import model

FORMAT = "switch-loadgen-workload"
FORMAT_VERSION = 3          # 2: the operator participant, for the switch's `stats`; 3: funding_scale
FEE_BPS = 125
MERCHANT_ACCOUNT_ID_BASE = 1_000_000
PAYER_ACCOUNT_ID_BASE = 100_000_000
PAYER_LEDGER_STRIDE = 10_000_000
FEE_ACCOUNT_ID_BASE = 9_000_000
SETTLEMENT_ACCOUNT_ID_BASE = 8_000_000
OPERATOR_PARTICIPANT_ID = 99
WALLETS_DEFAULT = 4
RULES_FILE_NAME = "rules.toml"
# Merchants whose category a rule set may deny (betting, 7995): 1 merchant in GAMBLING_EVERY,
# never among the hottest, so the demo rule set's `deny-gambling` has something to decline.
GAMBLING_EVERY = 50
GAMBLING_MCC = "7995"
MERCHANT_MCCS = ("5411", "4121", "7832", "8661", "5812", "5999")

# (profile, ISO 4217 numeric currency, weight among merchants, city). INR first: see above.
PROFILES = (
    ("upi", 356, 3, "Varanasi"),
    ("bharatqr", 356, 1, "Pune"),
    ("promptpay", 764, 3, "Bangkok"),
    ("qrph", 608, 2, "Makati"),
    ("qris", 360, 2, "Yogyakarta"),
)
LEDGERS = tuple(dict.fromkeys(currency for _, currency, _, _ in PROFILES))

# Payment kinds beyond a plain static-QR payment, per mille of fresh payments.
MIX_PER_MILLE_DEFAULT = {
    "dynamic": 100,           # dynamic QR binding the amount (the request says 0)
    "invalid_qr": 20,         # a damaged payload: QR 3xx code
    "unregistered": 5,        # a valid code of a merchant the switch does not know: 400
    "amount_mismatch": 5,     # dynamic code, a different amount in the request: 403
    "qr_replay": 5,           # a dynamic code paid again under a new id: 401
    "not_owned": 2,           # a payer account the wallet does not own: 503
}


@dataclasses.dataclass(frozen=True)
class FixtureSpec:
    seed: int = model.SEED_DEFAULT
    payer_count: int = model.PAYER_COUNT_DEFAULT
    merchant_count: int = model.MERCHANT_COUNT_DEFAULT
    wallet_count: int = WALLETS_DEFAULT
    # The normally funded payers' opening balances times this (model.py): enough money that a
    # closed-loop run keeps posting payments instead of refusing them once balances drain.
    funding_scale: int = model.FUNDING_SCALE_DEFAULT
    # A rule set (TOML) for the switch to run, copied beside the config; None: no rules, so the
    # gambling merchants and large payments pass, and the figures are those of the bare pay flow.
    rules_path: str | None = None

    def rules_sha256(self) -> str | None:
        return hashlib.sha256(pathlib.Path(self.rules_path).read_bytes()).hexdigest() if self.rules_path else None

    def check(self) -> None:
        if not 1 <= self.merchant_count < PAYER_ACCOUNT_ID_BASE - MERCHANT_ACCOUNT_ID_BASE:
            raise ValueError(f"merchants must be 1..{PAYER_ACCOUNT_ID_BASE - MERCHANT_ACCOUNT_ID_BASE - 1}")
        if not 1 <= self.payer_count < PAYER_LEDGER_STRIDE:
            raise ValueError(f"payers must be 1..{PAYER_LEDGER_STRIDE - 1}")
        if not 1 <= self.wallet_count <= self.payer_count:
            raise ValueError("wallets must be 1..payers")
        if self.account_count() > limits.ACCOUNTS_MAX:
            raise ValueError(f"{self.account_count()} accounts exceed accounts_max {limits.ACCOUNTS_MAX}")
        model.check_funding_scale(self.seed, self.payer_count, self.funding_scale)

    def account_count(self) -> int:
        return self.payer_count * len(LEDGERS) + self.merchant_count + 2 * len(LEDGERS)


def payer_account_id(ledger_slot: int, payer_index: int) -> int:
    return PAYER_ACCOUNT_ID_BASE + ledger_slot * PAYER_LEDGER_STRIDE + 1 + payer_index


def wallet_payer_ranges(spec: FixtureSpec) -> list[tuple[int, int]]:
    """Contiguous blocks of payer indexes, [start, end), one per wallet participant."""
    bounds = [spec.payer_count * wallet // spec.wallet_count for wallet in range(spec.wallet_count + 1)]
    return list(zip(bounds, bounds[1:]))


def wallet_secret(seed: int, wallet: int) -> str:
    # Deterministic so a run is repeatable; a benchmark fixture only, never a real deployment.
    return f"loadgen-wallet-{wallet + 1}-seed-{seed}-secret"


def operator_secret(seed: int) -> str:
    return f"loadgen-operator-seed-{seed}-secret"


def _merchant_identifier(profile: str, rank: int) -> str:
    if profile == "promptpay":
        return f"00668{rank:08d}"
    if profile == "qrph":
        return f"SWTCPHM1XXX:{rank:07d}"
    if profile == "qris":
        return f"ID10{rank:011d}"
    return f"m{rank:07d}@okswitch"


def merchant_table(spec: FixtureSpec) -> list[dict]:
    """Each merchant rank's profile, identifiers and static QR payload (seeded)."""
    rng = random.Random(f"{spec.seed}/switch-merchants")
    weights = [weight for _, _, weight, _ in PROFILES]
    table = []
    for rank in range(1, spec.merchant_count + 1):
        profile, currency, _, city = rng.choices(PROFILES, weights)[0]
        mcc = GAMBLING_MCC if rank % GAMBLING_EVERY == GAMBLING_EVERY // 2 else rng.choice(MERCHANT_MCCS)
        entry = {"rank": rank, "account_id": MERCHANT_ACCOUNT_ID_BASE + rank, "profile": profile,
                 "ledger": currency, "merchant_id": _merchant_identifier(profile, rank),
                 "name": f"Merchant {rank}", "city": city, "mcc": mcc, "country": _country(profile)}
        entry["payload"] = qrmake.make_payload(_qr_spec(entry))
        table.append(entry)
    return table


def _country(profile: str) -> str:
    return qr_tables.PROFILE_COUNTRIES.get(profile, "IN")  # UPI links carry no country: India's


def unregistered_payloads() -> dict[str, str]:
    """One valid static code per profile whose merchant is not in the directory."""
    payloads = {}
    for profile, currency, _, city in PROFILES:
        entry = {"profile": profile, "merchant_id": _merchant_identifier(profile, 9_999_999),
                 "name": "Unknown Shop", "city": city, "mcc": "5999", "ledger": currency}
        payloads[profile] = qrmake.make_payload(_qr_spec(entry))
    return payloads


def _qr_spec(entry: dict, **overrides) -> qrmake.QrSpec:
    return qrmake.QrSpec(profile=entry["profile"], merchant_id=entry["merchant_id"], name=entry["name"],
                         city=entry["city"], mcc=entry["mcc"], **overrides)


def dynamic_payload(entry: dict, amount_minor: int, reference: str) -> str:
    return qrmake.make_payload(_qr_spec(entry, dynamic=True, amount_minor=amount_minor, reference=reference))


def write_fixture(directory: str | pathlib.Path, spec: FixtureSpec) -> tuple[pathlib.Path, pathlib.Path]:
    """Write switch.toml and workload.json into `directory`; returns their paths."""
    spec.check()
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    merchants = merchant_table(spec)
    openings = model.opening_balances_minor(spec.seed, spec.payer_count, spec.funding_scale)
    config_path = directory / "switch.toml"
    if spec.rules_path:
        shutil.copyfile(spec.rules_path, directory / RULES_FILE_NAME)
    config_path.write_text(config_toml(spec, merchants, openings))
    workload = workload_document(spec, merchants)
    workload_path = directory / "workload.json"
    workload_path.write_text(json.dumps(workload, indent=1))
    return config_path, workload_path


def workload_document(spec: FixtureSpec, merchants: list[dict]) -> dict:
    return {
        "format": FORMAT, "version": FORMAT_VERSION,
        "seed": spec.seed, "payers": spec.payer_count, "merchants": spec.merchant_count,
        "funding_scale": spec.funding_scale, "rules_sha256": spec.rules_sha256(),
        "wallets": [{"participant_id": wallet + 1, "secret": wallet_secret(spec.seed, wallet),
                     "payer_index_range": list(block)}
                    for wallet, block in enumerate(wallet_payer_ranges(spec))],
        # The generator asks the switch's `stats` as this operator: durability, build, batches.
        "operator": {"participant_id": OPERATOR_PARTICIPANT_ID, "secret": operator_secret(spec.seed)},
        "ledgers": list(LEDGERS),
        "payer_account_base": {str(ledger): payer_account_id(slot, 0) for slot, ledger in enumerate(LEDGERS)},
        # An id no wallet owns, for the not_owned kind.
        "unowned_account_id": PAYER_ACCOUNT_ID_BASE,
        "fee_bps": FEE_BPS,
        "merchant_table": merchants,
        "unregistered_payloads": unregistered_payloads(),
        "mix_per_mille": dict(MIX_PER_MILLE_DEFAULT),
    }


def load_workload(path: str | pathlib.Path) -> dict:
    document = json.loads(pathlib.Path(path).read_text())
    if document.get("format") != FORMAT or document.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a {FORMAT} v{FORMAT_VERSION} file")
    return document


# ---- the TOML ---------------------------------------------------------------------

def config_toml(spec: FixtureSpec, merchants: list[dict], openings: list[int]) -> str:
    lines = [
        "# Generated by `switch bench workload`: a load-benchmark fixture, NOT a deployment.",
        f"# seed {spec.seed}, {spec.payer_count} payers x {len(LEDGERS)} currencies, "
        f"{spec.merchant_count} merchants, {spec.wallet_count} wallets, funding scale {spec.funding_scale}.",
        "[switch]", 'name = "qr-switch-bench"', f"accounts_max = {max(spec.account_count(), 1000)}",
        f"rate_items_per_second = {limits.RATE_ITEMS_PER_SECOND}", f"rate_burst_items = {limits.RATE_BURST_ITEMS}",
    ]
    if spec.rules_path:
        lines.append(f'rules = "{RULES_FILE_NAME}"')
    lines.append("")
    lines += _participants_toml(spec)
    for ledger in LEDGERS:
        lines += ["[[ledgers]]", f"ledger = {ledger}", f"fee_account_id = {FEE_ACCOUNT_ID_BASE + ledger}",
                  f"settlement_account_id = {SETTLEMENT_ACCOUNT_ID_BASE + ledger}", f"fee_bps = {FEE_BPS}", ""]
        lines += _account_toml(FEE_ACCOUNT_ID_BASE + ledger, ledger, 3)
        lines += _account_toml(SETTLEMENT_ACCOUNT_ID_BASE + ledger, ledger, 4)
    lines += _payers_toml(spec, openings)
    for entry in merchants:
        lines += _account_toml(entry["account_id"], entry["ledger"], 2, flags='["debits_must_not_exceed_credits"]')
    for entry in merchants:
        lines += _merchant_toml(entry)
    return "\n".join(lines) + "\n"


def _participants_toml(spec: FixtureSpec) -> list[str]:
    lines = []
    for wallet, (start, end) in enumerate(wallet_payer_ranges(spec)):
        ranges = ", ".join(f"[{payer_account_id(slot, start)}, {payer_account_id(slot, end - 1)}]"
                           for slot in range(len(LEDGERS)))
        lines += ["[[participants]]", f"id = {wallet + 1}", f'name = "bench wallet {wallet + 1}"', 'role = "wallet"',
                  f'secret = "{wallet_secret(spec.seed, wallet)}"', f"accounts = [{ranges}]", ""]
    lines += ["[[participants]]", f"id = {OPERATOR_PARTICIPANT_ID}", 'name = "bench operator"', 'role = "operator"',
              f'secret = "{operator_secret(spec.seed)}"', "accounts = []", ""]
    return lines


def _payers_toml(spec: FixtureSpec, openings: list[int]) -> list[str]:
    lines = []
    for wallet, (start, end) in enumerate(wallet_payer_ranges(spec)):
        for slot, ledger in enumerate(LEDGERS):
            for index in range(start, end):
                lines += _account_toml(payer_account_id(slot, index), ledger, 1, owner=wallet + 1,
                                       flags='["debits_must_not_exceed_credits"]', opening_minor=openings[index])
    return lines


def _account_toml(account_id: int, ledger: int, code: int, owner: int = 0, flags: str = "",
                  opening_minor: int = 0) -> list[str]:
    lines = ["[[accounts]]", f"id = {account_id}", f"ledger = {ledger}", f"code = {code}"]
    if owner:
        lines.append(f"owner = {owner}")
    if flags:
        lines.append(f"flags = {flags}")
    if opening_minor:
        lines.append(f"opening_balance_minor = {opening_minor}")
    return lines


def _merchant_toml(entry: dict) -> list[str]:
    """A [[merchants]] entry: the keyword arguments of switch.merchants.MerchantDirectory.register."""
    scheme = "upi" if entry["profile"] in ("upi", "bharatqr") else entry["profile"]
    return ["[[merchants]]", f'scheme = "{scheme}"', f'merchant_id = "{entry["merchant_id"]}"',
            f"account_id = {entry['account_id']}", f'name = "{entry["name"]}"', f'mcc = "{entry["mcc"]}"',
            f'country = "{entry["country"]}"', f"currency = {entry['ledger']}"]
