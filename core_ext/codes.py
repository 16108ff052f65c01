"""The one registry of result codes.

Every result the switch can give -- a ledger verdict, a QR rejection, a rule
decision, a protocol error -- has exactly one entry here: a stable number that
travels on the wire, a stable UPPER_SNAKE name, a category and a sentence for
docs/ERRORS.md.  The compiled core sees the same table as a C enum
(`core_ext/codes.pxi`, generated from this file by setup.py), the server,
client and CLI import `Code` from here, and docs/ERRORS.md is generated from
it (`python -m core_ext.codes --markdown`); a test fails when the doc drifts.

Numbers are never reused or renumbered once released: a wallet may have
switched on them.  Ranges:

      0        success
      1 -  99  protocol and connection (framing, msgpack, handshake)
    100 - 199  ledger: transfers and accounts (TigerBeetle's model)
    300 - 399  QR payload validation (EMVCo MPM, national profiles, UPI links)
    400 - 449  payment path: merchant directory, dynamic QR, payment fields
    450 - 499  risk and AML decisions (what a wallet sees; rule ids stay internal)
    500 - 549  authentication and authorization
    600 - 649  system: overload, storage, shutdown
"""
from __future__ import annotations

import enum
import sys
from typing import NamedTuple


class Entry(NamedTuple):
    value: int
    name: str
    category: str
    description: str


_ENTRIES: list[Entry] = [
    Entry(0, "OK", "success", "Accepted: the event was applied (or, for a lookup, found)."),

    # ---- 1-99: protocol and connection -------------------------------------
    # (filled in by the wire protocol; see docs/PROTOCOL.md)
    Entry(1, "FRAME_TOO_LARGE", "protocol",
          "The length prefix is past frame_bytes_max. The server answers with request id 0 and closes the connection."),
    Entry(2, "FRAME_EMPTY", "protocol",
          "The length prefix is zero. The server answers with request id 0 and closes the connection."),
    Entry(3, "MALFORMED_MSGPACK", "protocol",
          "The frame body is not exactly one valid msgpack object. Answered with request id 0; the connection stays open."),
    Entry(4, "MSGPACK_LIMIT_EXCEEDED", "protocol",
          "A string, binary, array or map in the frame is longer than its limit. Answered with request id 0; the connection stays open."),
    Entry(5, "MALFORMED_REQUEST", "protocol",
          "The frame is not an array [request_id, operation, arguments] with a request id in 1..2^32-1; the connection stays open."),
    Entry(6, "UNKNOWN_OPERATION", "protocol", "The operation name is not one the protocol defines; the connection stays open."),
    Entry(7, "INVALID_ARGUMENTS", "protocol",
          "The arguments of a known operation have the wrong shape, msgpack type or range; nothing was applied."),
    Entry(8, "TOO_MANY_ITEMS", "protocol", "A batch frame holds more items than batch_frame_items_max; nothing was applied."),
    Entry(9, "HANDSHAKE_TIMEOUT", "protocol",
          "The client did not authenticate within handshake_timeout_ms; the server closes the connection."),
    Entry(10, "UNSUPPORTED_VERSION", "protocol",
          "The client asked for a protocol version the server does not speak; the server closes the connection."),
    Entry(11, "MALFORMED_HANDSHAKE", "protocol",
          "The first frame from the client is not a well-formed `auth` message; the server closes the connection."),
    Entry(12, "TOO_MANY_CONNECTIONS", "protocol",
          "The server holds connections_max connections already; it answers this and closes the new connection."),
    Entry(13, "RATE_LIMITED", "protocol",
          "The participant sent more items per second than its rate limit; this item was not applied. Retry later with the same ids."),
    Entry(14, "SLOW_READER", "protocol",
          "The client stopped reading its responses past the write-buffer limit; the server cut the connection (logged, never sent)."),
    Entry(15, "CONNECTION_LOST", "protocol",
          "Never sent: the Python client reports it when the connection dropped before the answer came; retry with the same ids."),

    # ---- 100-199: ledger -----------------------------------------------------
    Entry(100, "LINKED_EVENT_FAILED", "ledger",
          "Another event in this linked chain failed, so this one was not applied either."),
    Entry(101, "LINKED_EVENT_CHAIN_OPEN", "ledger",
          "The last event of the batch has the `linked` flag: a chain must be closed inside its batch."),
    Entry(102, "ID_MUST_NOT_BE_ZERO", "ledger", "The id is zero."),
    Entry(103, "ID_MUST_NOT_BE_INT_MAX", "ledger", "The id is 2^64-1 (accounts) or 2^128-1 (transfers), which is reserved."),
    Entry(104, "FLAGS_ARE_MUTUALLY_EXCLUSIVE", "ledger",
          "Two flags that cannot be combined were set (e.g. pending with post_pending_transfer, or both balance limits)."),
    Entry(105, "RESERVED_FLAG", "ledger", "A flag bit that has no meaning yet was set."),
    Entry(106, "LEDGER_MUST_NOT_BE_ZERO", "ledger", "The ledger (currency) is zero."),
    Entry(107, "CODE_MUST_NOT_BE_ZERO", "ledger", "The code (reason/type) is zero."),
    Entry(108, "EXISTS", "ledger",
          "An event with this id was already applied with identical fields: nothing changed (idempotent retry)."),
    Entry(109, "EXISTS_WITH_DIFFERENT_FLAGS", "ledger", "The id exists with different flags."),
    Entry(110, "EXISTS_WITH_DIFFERENT_LEDGER", "ledger", "The id exists with a different ledger."),
    Entry(111, "EXISTS_WITH_DIFFERENT_CODE", "ledger", "The id exists with a different code."),
    Entry(112, "EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID", "ledger", "The transfer id exists with a different debit account."),
    Entry(113, "EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID", "ledger", "The transfer id exists with a different credit account."),
    Entry(114, "EXISTS_WITH_DIFFERENT_AMOUNT", "ledger", "The transfer id exists with a different amount."),
    Entry(115, "EXISTS_WITH_DIFFERENT_PENDING_ID", "ledger", "The transfer id exists with a different pending_id."),
    Entry(116, "EXISTS_WITH_DIFFERENT_TIMEOUT", "ledger", "The transfer id exists with a different timeout."),
    Entry(117, "ID_ALREADY_FAILED", "ledger",
          "The first attempt with this transfer id failed a balance check; the id can never succeed."),
    Entry(118, "DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO", "ledger", "The debit account id is zero."),
    Entry(119, "CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO", "ledger", "The credit account id is zero."),
    Entry(120, "ACCOUNTS_MUST_BE_DIFFERENT", "ledger", "The debit and credit account are the same account."),
    Entry(121, "PENDING_ID_MUST_BE_ZERO", "ledger", "pending_id is set on a transfer that neither posts nor voids a pending one."),
    Entry(122, "PENDING_ID_MUST_NOT_BE_ZERO", "ledger", "A post/void transfer must name the pending transfer in pending_id."),
    Entry(123, "PENDING_ID_MUST_BE_DIFFERENT", "ledger", "pending_id equals the transfer's own id."),
    Entry(124, "TIMEOUT_RESERVED_FOR_PENDING_TRANSFER", "ledger", "A timeout was given on a transfer that is not pending."),
    Entry(125, "AMOUNT_MUST_NOT_BE_ZERO", "ledger", "The amount is zero."),
    Entry(126, "DEBIT_ACCOUNT_NOT_FOUND", "ledger", "No account has the debit account id."),
    Entry(127, "CREDIT_ACCOUNT_NOT_FOUND", "ledger", "No account has the credit account id."),
    Entry(128, "ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER", "ledger", "The two accounts are in different ledgers (currencies)."),
    Entry(129, "TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS", "ledger", "The transfer's ledger differs from its accounts' ledger."),
    Entry(130, "PENDING_TRANSFER_NOT_FOUND", "ledger", "No transfer has the pending_id."),
    Entry(131, "PENDING_TRANSFER_NOT_PENDING", "ledger", "The transfer named by pending_id is not a pending transfer."),
    Entry(132, "PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID", "ledger", "The post/void names another debit account than the pending transfer."),
    Entry(133, "PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID", "ledger", "The post/void names another credit account than the pending transfer."),
    Entry(134, "PENDING_TRANSFER_HAS_DIFFERENT_LEDGER", "ledger", "The post/void names another ledger than the pending transfer."),
    Entry(135, "PENDING_TRANSFER_HAS_DIFFERENT_CODE", "ledger", "The post/void names another code than the pending transfer."),
    Entry(136, "EXCEEDS_PENDING_TRANSFER_AMOUNT", "ledger", "A post asks for more than the pending transfer reserved."),
    Entry(137, "PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT", "ledger", "A void names an amount other than the pending transfer's."),
    Entry(138, "PENDING_TRANSFER_ALREADY_POSTED", "ledger", "The pending transfer was already posted."),
    Entry(139, "PENDING_TRANSFER_ALREADY_VOIDED", "ledger", "The pending transfer was already voided."),
    Entry(140, "PENDING_TRANSFER_EXPIRED", "ledger", "The pending transfer's timeout passed; its amounts were released."),
    Entry(141, "OVERFLOWS_DEBITS_PENDING", "ledger", "debits_pending of the debit account would pass 2^64-1."),
    Entry(142, "OVERFLOWS_CREDITS_PENDING", "ledger", "credits_pending of the credit account would pass 2^64-1."),
    Entry(143, "OVERFLOWS_DEBITS_POSTED", "ledger", "debits_posted of the debit account would pass 2^64-1."),
    Entry(144, "OVERFLOWS_CREDITS_POSTED", "ledger", "credits_posted of the credit account would pass 2^64-1."),
    Entry(145, "OVERFLOWS_DEBITS", "ledger", "debits_pending + debits_posted of the debit account would pass 2^64-1."),
    Entry(146, "OVERFLOWS_CREDITS", "ledger", "credits_pending + credits_posted of the credit account would pass 2^64-1."),
    Entry(147, "OVERFLOWS_TIMEOUT", "ledger", "timestamp + timeout would pass the clock's range."),
    Entry(148, "EXCEEDS_CREDITS", "ledger",
          "The debit account has debits_must_not_exceed_credits and this transfer would break it (insufficient funds)."),
    Entry(149, "EXCEEDS_DEBITS", "ledger",
          "The credit account has credits_must_not_exceed_debits and this transfer would break it."),
    Entry(150, "ACCOUNT_NOT_FOUND", "ledger", "A lookup named an account that does not exist (or is not yours)."),
    Entry(151, "TRANSFER_NOT_FOUND", "ledger", "A lookup named a transfer that does not exist (or is not yours)."),
    Entry(152, "BATCH_TOO_LARGE", "ledger", "A batch holds more events than batch_events_max."),
    Entry(153, "AMOUNT_MUST_NOT_EXCEED_BALANCE_MAX", "ledger", "The amount is past 2^64-1 or is negative."),
    Entry(154, "ACCOUNTS_LIMIT_REACHED", "ledger", "The ledger holds accounts_max accounts already."),
    Entry(155, "FIELD_OUT_OF_RANGE", "ledger",
          "A field is not an integer or does not fit its width (u128 ids and user_data_128, u64 account ids and user_data_64, u32 ledger and user_data_32, u16 code)."),
    Entry(156, "TIMEOUT_MUST_NOT_EXCEED_MAX", "ledger", "The timeout is negative or past timeout_seconds_max."),
    Entry(157, "TIMESTAMP_MUST_BE_ZERO", "ledger", "The event carries a timestamp: the ledger assigns timestamps itself."),
    Entry(158, "BALANCES_MUST_BE_ZERO", "ledger", "A new account carries a nonzero balance: balances move only by transfers."),
    Entry(159, "EXISTS_WITH_DIFFERENT_USER_DATA_128", "ledger", "The id exists with a different user_data_128."),
    Entry(160, "EXISTS_WITH_DIFFERENT_USER_DATA_64", "ledger", "The id exists with a different user_data_64."),
    Entry(161, "EXISTS_WITH_DIFFERENT_USER_DATA_32", "ledger", "The id exists with a different user_data_32."),

    # ---- 300-399: QR payload validation --------------------------------------
    # A rejection also names the tag at fault (e.g. "62.05", or the UPI key "pa").
    Entry(300, "QR_EMPTY", "qr", "The QR payload is empty."),
    Entry(301, "QR_TOO_LONG", "qr",
          "The payload is longer than qr_payload_chars_max characters (EMVCo) or qr_payload_bytes_max bytes (any payload)."),
    Entry(302, "QR_BAD_ENCODING", "qr", "The payload is not valid UTF-8 text."),
    Entry(303, "QR_CRC_FORMAT", "qr",
          "The payload does not end with the CRC object `6304` and four upper-case hex digits."),
    Entry(304, "QR_CRC_MISMATCH", "qr",
          "The CRC-16/CCITT-FALSE over the payload up to and including `6304` differs from the printed CRC: the code is damaged or altered."),
    Entry(305, "QR_BAD_TLV_HEADER", "qr",
          "A data object's ID or length is not two digits (or the header is cut short)."),
    Entry(306, "QR_ZERO_LENGTH", "qr", "A data object has length 00; lengths run from 01 to 99."),
    Entry(307, "QR_LENGTH_OVERRUN", "qr",
          "A data object's length (in characters) runs past the end of the payload or of its template."),
    Entry(308, "QR_DUPLICATE_TAG", "qr", "An ID occurs twice at the same level (root or one template)."),
    Entry(309, "QR_TAG_ORDER", "qr", "The payload format indicator 00 is not first, or the CRC 63 is not last."),
    Entry(310, "QR_MISSING_TAG", "qr", "A data object that the profile makes mandatory is absent."),
    Entry(311, "QR_BAD_FORMAT_INDICATOR", "qr",
          "The payload format indicator (00) is not 01 (02 is accepted for DuitNow only)."),
    Entry(312, "QR_BAD_INITIATION_METHOD", "qr", "The point of initiation method (01) is not 11 (static) or 12 (dynamic)."),
    Entry(313, "QR_NO_MERCHANT_ACCOUNT", "qr", "No merchant account information object (02-51) is present."),
    Entry(314, "QR_BAD_GUID", "qr",
          "A template's globally unique identifier (sub-ID 00) is longer than 32 characters or not printable ASCII."),
    Entry(315, "QR_NOT_ANS", "qr",
          "A field of format ans holds a character outside printable ASCII (e.g. an accent, an emoji, a control character)."),
    Entry(316, "QR_FIELD_TOO_LONG", "qr",
          "A field is longer than its definition allows (e.g. merchant name 25, city 15, reference 25 characters)."),
    Entry(317, "QR_BAD_MCC", "qr", "The merchant category code (52) is not four digits."),
    Entry(318, "QR_BAD_CURRENCY", "qr", "The transaction currency (53) is not three digits."),
    Entry(319, "QR_UNKNOWN_CURRENCY", "qr", "The transaction currency (53) is not an active ISO 4217 numeric code."),
    Entry(320, "QR_BAD_AMOUNT", "qr",
          "The amount (54) is not digits with at most one '.', is longer than 13 characters, or is zero."),
    Entry(321, "QR_AMOUNT_PRECISION", "qr",
          "The amount has non-zero digits past the currency's minor unit, so it cannot be paid exactly in minor units."),
    Entry(322, "QR_BAD_TIP_INDICATOR", "qr", "The tip or convenience indicator (55) is not 01, 02 or 03."),
    Entry(323, "QR_BAD_CONVENIENCE_FEE", "qr",
          "The convenience fee (56 fixed, 57 percentage) is malformed, zero, out of range, or present without the matching 55 value."),
    Entry(324, "QR_BAD_COUNTRY", "qr", "The country code (58) is not two upper-case letters (ISO 3166-1 alpha-2)."),
    Entry(325, "QR_BAD_FIELD_VALUE", "qr",
          "A field holds a value outside the set it allows (e.g. 62.09 other than A/M/E, 62.11 channel, 64.00 language)."),
    Entry(326, "QR_CURRENCY_NOT_ALLOWED", "qr", "The national profile does not allow this currency (e.g. PromptPay only 764)."),
    Entry(327, "QR_COUNTRY_NOT_ALLOWED", "qr", "The national profile does not allow this country code (e.g. PayNow only SG)."),
    Entry(328, "QR_BAD_ACCOUNT", "qr",
          "A national scheme's account identifier is malformed (e.g. PromptPay mobile not 13 digits, VietQR bank BIN not 6 digits)."),
    Entry(329, "QR_BAD_EXPIRY", "qr",
          "An expiry or timestamp field is malformed (PayNow 26.04 date, KHQR 99 timestamps of 13 digits, DuitNow "
          "26.03 epoch milliseconds of at most 13 digits, UPI QRexpire not ISO 8601 YYYY-MM-DDTHH:MM:SS[Z|+HH:MM])."),
    Entry(330, "QR_EXPIRED", "qr",
          "The code's expiry has passed (PayNow 26.04, KHQR 99.01, DuitNow 26.03, UPI QRexpire)."),
    Entry(331, "QR_PROFILE_RULE", "qr",
          "A rule of the national profile is broken (e.g. Pix location with a URL scheme, KHQR UnionPay with USD, PayNow fixed amount not editable)."),
    Entry(350, "UPI_BAD_SCHEME", "qr", "A UPI payload that does not start with `upi://pay?`."),
    Entry(351, "UPI_BAD_ENCODING", "qr",
          "The UPI link holds a raw space or a character not allowed in a URI, a broken %-escape, or decodes to invalid UTF-8."),
    Entry(352, "UPI_MALFORMED_QUERY", "qr",
          "A UPI parameter is not `key=value` (empty key, missing '=', empty parameter) or the separator is the HTML escape `&amp;`."),
    Entry(353, "UPI_DUPLICATE_KEY", "qr", "A UPI parameter occurs twice."),
    Entry(354, "UPI_MISSING_PARAM", "qr",
          "A mandatory UPI parameter is absent or empty (pa, pn; tr for merchant and dynamic links)."),
    Entry(355, "UPI_BAD_VPA", "qr", "The payee address is not a virtual payment address `handle@psp`."),
    Entry(356, "UPI_BAD_AMOUNT", "qr",
          "am or mam is not a positive decimal with at most two decimals and at most 13 characters."),
    Entry(357, "UPI_BAD_CURRENCY", "qr", "cu is not INR."),
    Entry(358, "UPI_BAD_MCC", "qr", "mc is not a four-digit merchant category code."),
    Entry(359, "UPI_BAD_URL", "qr", "url does not start with http:// or https://."),
    Entry(360, "UPI_TOO_MANY_PARAMS", "qr", "The UPI link has more than upi_params_max parameters."),

    # ---- 400-449: payment path ------------------------------------------------
    Entry(400, "MERCHANT_NOT_REGISTERED", "payment",
          "The QR code is valid but names no merchant registered with this switch."),
    Entry(401, "QR_REPLAYED", "payment", "This dynamic QR code was already paid: a dynamic code is single use."),
    Entry(402, "PAYMENT_QR_EXPIRED", "payment", "The dynamic QR code's expiry passed before the payment reached the switch."),
    Entry(403, "AMOUNT_MISMATCH", "payment", "The payment's amount differs from the amount the QR code binds."),
    Entry(404, "PAYMENT_AMOUNT_INVALID", "payment",
          "The payment's amount is not a positive integer count of minor units within amount_minor_max."),
    Entry(405, "CURRENCY_MISMATCH", "payment", "The QR code's currency differs from the registered merchant's currency."),
    Entry(406, "MERCHANT_ALREADY_REGISTERED", "payment",
          "This (scheme, merchant identifier) is already registered to another account."),
    Entry(407, "USED_QR_LIMIT_REACHED", "payment",
          "The table of used dynamic QR codes holds used_qr_count_max entries; the payment was not applied."),
    Entry(408, "MERCHANT_FIELD_INVALID", "payment",
          "A merchant registration field is missing or out of range (scheme, identifier, name, MCC, country, currency, account)."),
    Entry(409, "MERCHANTS_LIMIT_REACHED", "payment",
          "The merchant directory holds merchant_keys_max registrations; this one was not added."),
    Entry(410, "REVIEW_QUEUE_FULL", "payment",
          "The rules would hold this payment for review, but the review queue already holds review_queue_items_max "
          "payments (or the configured review_queue_items_max): it is declined and nothing was reserved. Retry "
          "later with the same id, once operators have decided held payments."),

    # ---- 450-499: risk and AML decisions --------------------------------------
    # What a wallet sees; which rule fired stays in the operator's audit log.
    # AML rules answer the generic RISK_DECLINED so that a payer is not tipped off.
    Entry(450, "RISK_DECLINED", "risk",
          "Declined by the switch's risk and anti-money-laundering rules; nothing was posted."),
    Entry(451, "RISK_REVIEW", "risk",
          "Held for review: the amount is reserved (pending) until an operator approves or rejects it, or it times out."),
    Entry(452, "RISK_LIMIT_EXCEEDED", "risk",
          "A limit of the payer's or payee's wallet would be exceeded (per payment, per hour, per day, new account, balance cap)."),
    Entry(453, "RISK_CATEGORY_NOT_ALLOWED", "risk",
          "Payments to this merchant category are not allowed from this switch."),
    Entry(454, "RISK_QR_REJECTED", "risk",
          "The QR code cannot be paid: a dynamic code already used, expired or for another amount, or a static code not registered to this merchant."),
    Entry(455, "RISK_TRAVEL_RULE_DATA_MISSING", "risk",
          "A cross-border payment at or above the FATF Recommendation 16 threshold lacks the payer's or payee's information."),
    Entry(456, "RISK_STATE_FULL", "risk",
          "The risk engine's table of live dynamic QR codes is full, so this use could not be recorded; retry later."),
    Entry(457, "RISK_CONTEXT_INVALID", "risk",
          "A payment field given to the risk engine is missing, of the wrong type or out of range, or the payment's "
          "ledger or the rule set's currency has no usd_minor_per_million_minor to convert with; nothing was posted."),

    # ---- 500-549: authentication and authorization ----------------------------
    Entry(500, "NOT_AUTHENTICATED", "auth",
          "A request came before the handshake completed; the server answers with request id 0 and closes the connection."),
    Entry(501, "AUTHENTICATION_FAILED", "auth",
          "Unknown participant or wrong HMAC over this connection's nonce; the server closes the connection."),
    Entry(502, "ALREADY_AUTHENTICATED", "auth",
          "An `auth` message on a connection that is already authenticated; ignored, the connection stays open."),
    Entry(503, "ACCOUNT_NOT_OWNED", "auth",
          "The participant tried to debit (or post/void a pending transfer from) an account it does not own; nothing was applied."),
    Entry(504, "OPERATOR_ROLE_REQUIRED", "auth", "The operation needs the operator role (e.g. creating accounts); nothing was applied."),

    # ---- 600-649: system ------------------------------------------------------
    Entry(600, "BUSY", "system", "The switch is shedding load; nothing was applied. Retry later with the same ids."),
    Entry(601, "STORAGE_FAILED", "system",
          "The batch could not be committed (disk full, I/O error); nothing in it was applied. Retry with the same ids."),
    Entry(602, "SHUTTING_DOWN", "system", "The switch is stopping and takes no new requests; nothing was applied."),
    Entry(603, "INTERNAL_ERROR", "system", "A bug: nothing was applied, and the operator has a log entry."),
    Entry(604, "RULES_INVALID", "system",
          "The rule set given to reload_rules (or the rules file re-read on SIGHUP) is not valid; the running rule set is unchanged."),
    Entry(605, "RULES_NOT_CONFIGURED", "system",
          "The switch runs without a rules engine (no `rules` file in its configuration): there is no rule set to reload."),
    Entry(606, "JOURNAL_CORRUPT", "system",
          "Never sent: a journal record of the data directory fails its checksum (bit rot, a torn write, a bad restore). "
          "The switch refuses to open the directory and names the batch; `switch ledger check` reports it. Restore from a backup."),
    Entry(607, "STORAGE_FORMAT_UNSUPPORTED", "system",
          "Never sent: the data directory's layout version is one this switch cannot read (written by a newer switch); "
          "the switch refuses to open it and changes nothing."),
    Entry(608, "SNAPSHOT_CORRUPT", "system",
          "Never sent: the newest snapshot of the data directory (written by `switch ledger compact`) fails a checksum, "
          "misses a chunk or does not restore. The switch refuses to open the directory and names the snapshot's batch; "
          "`switch ledger check` reports it. Restore from a backup."),
]

Code = enum.IntEnum("Code", [(entry.name, entry.value) for entry in _ENTRIES])
Code.__doc__ = "Every result code of the switch; see docs/ERRORS.md."

ENTRIES: dict[int, Entry] = {entry.value: entry for entry in _ENTRIES}


def describe(code: int) -> str:
    """The registry's sentence for a code, for logs and the CLI."""
    entry = ENTRIES.get(int(code))
    return entry.description if entry else f"unknown code {int(code)}"


def name_of(code: int) -> str:
    entry = ENTRIES.get(int(code))
    return entry.name if entry else f"UNKNOWN_{int(code)}"


def check_registry() -> None:
    """Fail loudly on a duplicate number or name: a registry that lies is worse than none."""
    seen_values: set[int] = set()
    seen_names: set[str] = set()
    for entry in _ENTRIES:
        assert entry.value not in seen_values, f"duplicate code number {entry.value}"
        assert entry.name not in seen_names, f"duplicate code name {entry.name}"
        assert entry.name.isupper() and entry.name.replace("_", "").isalnum(), entry.name
        assert 0 <= entry.value < 65536, entry.value
        seen_values.add(entry.value)
        seen_names.add(entry.name)


check_registry()


def as_pxi() -> str:
    """The registry as a Cython enum, so the compiled core names codes, never numbers."""
    lines = ["# Generated from core_ext/codes.py by setup.py. Do not edit.", "cdef enum:"]
    lines += [f"    CODE_{entry.name} = {entry.value}" for entry in _ENTRIES]
    return "\n".join(lines) + "\n"


_CATEGORY_TITLES = {
    "success": "Success",
    "protocol": "Protocol and connection (1-99)",
    "ledger": "Ledger: transfers and accounts (100-199)",
    "qr": "QR payload validation (300-399)",
    "payment": "Payment path (400-449)",
    "risk": "Risk and AML decisions (450-499)",
    "auth": "Authentication and authorization (500-549)",
    "system": "System (600-649)",
}


def as_markdown() -> str:
    """docs/ERRORS.md, generated so it can never disagree with the code."""
    out = [
        "# Result codes",
        "",
        "Generated from `core_ext/codes.py` by `python -m core_ext.codes --markdown`; do not edit by hand.",
        "Every response of the switch carries one of these numbers; the number and the name are stable",
        "across releases and are never reused. A batch response carries one code per item.",
        "",
    ]
    for category, title in _CATEGORY_TITLES.items():
        entries = [entry for entry in _ENTRIES if entry.category == category]
        if not entries:
            continue
        out += [f"## {title}", "", "| code | name | meaning |", "| ---: | --- | --- |"]
        out += [f"| {e.value} | `{e.name}` | {e.description} |" for e in entries]
        out.append("")
    unknown = {entry.category for entry in _ENTRIES} - set(_CATEGORY_TITLES)
    assert not unknown, f"categories without a title: {unknown}"
    return "\n".join(out)


if __name__ == "__main__":
    if sys.argv[1:] == ["--markdown"]:
        sys.stdout.write(as_markdown())
    elif sys.argv[1:] == ["--pxi"]:
        sys.stdout.write(as_pxi())
    else:
        sys.exit("usage: python -m core_ext.codes --markdown | --pxi")
