"""The compiled engine's per-key tables (C open-addressing hash indexes under an
LRU list) against the twin's OrderedDicts, on keys chosen so that they collide:
every key of a pool has its home bucket in one short run, wrapping past the last
bucket, so probes, evictions out of the middle of a run and backward shifts all
happen on short streams.  A key the index lost would come back as a fresh, zeroed
state (a different state_hash) or as no state at evaluate (a different decision)."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import core_ext
from core_ext import limits
from core_ext.rules_types import NS_PER_SECOND, Action, Decision, PaymentContext, load_ruleset

T0 = 1_700_000_000 * NS_PER_SECOND
POSTED = Decision(int(Action.APPROVE), 0, (), "")
U64 = (1 << 64) - 1

# One rule per table lookup: the payer's and the payee's account state, the device's, the dynamic QR's.
RULES = """
[ruleset]
name = "tables"
[[rules]]
id = "day-count"
kind = "payer_day_count"
mode = "enforce"
action = "review"
reason = "DC"
limit = [2, 2, 2]
[[rules]]
id = "fan-in"
kind = "fan_in"
mode = "enforce"
action = "review"
reason = "FI"
limit = 1
[[rules]]
id = "dev-velocity"
kind = "device_velocity"
mode = "enforce"
action = "review"
reason = "DV"
limit = 2
[[rules]]
id = "dynamic-qr"
kind = "dynamic_qr"
mode = "enforce"
action = "decline"
reason = "DQ"
"""

CAPACITY = {"accounts": 6, "devices": 3, "dynamic_qr": 3}


def mix64(value: int) -> int:
    """The splitmix64 finalizer the compiled index hashes keys with (core_ext/_rules.pyx mix64)."""
    value = (value + 0x9E3779B97F4A7C15) & U64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & U64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & U64
    return value ^ (value >> 31)


def bucket_count(capacity: int) -> int:
    """The smallest power of two >= 2 * capacity: the index's size for `capacity` slots."""
    count = 1
    while count < 2 * capacity:
        count <<= 1
    return count


def colliding_keys(capacity: int, wanted: int) -> list[int]:
    """`wanted` u64 keys whose home buckets are the last bucket or the first (a run that wraps)."""
    mask = bucket_count(capacity) - 1
    keys, candidate = [], 1
    while len(keys) < wanted:
        if mix64(candidate) & mask in (mask, 0):
            keys.append(candidate)
        candidate += 1
    return keys


ACCOUNT_KEYS = colliding_keys(CAPACITY["accounts"], 12)
DEVICE_KEYS = colliding_keys(CAPACITY["devices"], 6)
QR_KEYS = colliding_keys(CAPACITY["dynamic_qr"], 6)


def context(now_ns: int, payer: int, payee: int, device: int, qr: int, dynamic: bool) -> PaymentContext:
    return PaymentContext(
        payer_account_id=payer, payer_kyc_tier=0, payer_created_ns=0, payer_balance_minor=10**6,
        merchant_account_id=payee, merchant_mcc=5411, merchant_is_personal=True, merchant_country=356,
        payer_country=356, device_id=device, qr_digest=qr, qr_dynamic=dynamic, amount_minor=100, currency=356,
        amount_usd_minor=100, originator_info_present=True, beneficiary_info_present=True, now_ns=now_ns,
        qr_merchant_account_id=payee, qr_expires_ns=now_ns + 600 * NS_PER_SECOND if dynamic else 0,
    )


def engines(capacity=None):
    ruleset = load_ruleset(RULES)
    return [core_ext.implementation(name).RuleEngine(ruleset, capacity=capacity) for name in ("compiled", "reference")]


def assert_same(compiled, reference) -> None:
    assert compiled.tables() == reference.tables()
    assert compiled.state_hash() == reference.state_hash()


steps = st.lists(st.tuples(st.sampled_from(ACCOUNT_KEYS), st.sampled_from(ACCOUNT_KEYS),
                           st.sampled_from([0] + DEVICE_KEYS), st.sampled_from(QR_KEYS), st.booleans()),
                 min_size=1, max_size=60)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_colliding_keys_give_the_twins_decisions_tables_and_state(stream):
    compiled, reference = engines(CAPACITY)
    now_ns = T0
    for payer, payee, device, qr, dynamic in stream:
        now_ns += NS_PER_SECOND
        payment = context(now_ns, payer, payee, device, qr, dynamic)
        decision = compiled.evaluate(payment)
        assert decision == reference.evaluate(payment), payment
        compiled.observe(payment, POSTED)
        reference.observe(payment, POSTED)
        assert_same(compiled, reference)


def test_the_pools_collide_and_overflow_every_table():
    """The premise of the property test: more keys than slots, all homed in a two-bucket run."""
    for capacity, keys in ((CAPACITY["accounts"], ACCOUNT_KEYS), (CAPACITY["devices"], DEVICE_KEYS),
                           (CAPACITY["dynamic_qr"], QR_KEYS)):
        mask = bucket_count(capacity) - 1
        assert len(keys) > capacity
        assert {mix64(key) & mask for key in keys} <= {mask, 0}


def test_evicting_each_position_of_a_full_collision_run_keeps_the_others_reachable():
    """Fill the accounts with six colliding payers, then for each position evict it (touch it
    last-but-everything, add a new key) and check every remaining payer is still found."""
    for victim in range(CAPACITY["accounts"]):
        compiled, reference = engines(CAPACITY)
        now_ns = T0
        first = ACCOUNT_KEYS[:CAPACITY["accounts"]]
        order = [key for key in first if key != first[victim]]
        for key in first + order:              # the victim is now the least recently used
            now_ns += NS_PER_SECOND
            payment = context(now_ns, key, key, 0, 0, False)
            for engine in (compiled, reference):
                engine.observe(payment, POSTED)
        newcomer = ACCOUNT_KEYS[CAPACITY["accounts"]]
        for engine in (compiled, reference):
            engine.observe(context(now_ns, newcomer, newcomer, 0, 0, False), POSTED)
        assert compiled.tables()["accounts"] == {"size": 6, "capacity": 6, "evictions": 1}
        assert_same(compiled, reference)
        for key in order + [newcomer, first[victim]]:
            payment = context(now_ns, key, key, 0, 0, False)
            assert compiled.evaluate(payment) == reference.evaluate(payment), (victim, key)


def test_a_table_of_one_slot_holds_one_key_and_evicts_on_the_next():
    compiled, reference = engines({"accounts": 1, "devices": 1, "dynamic_qr": 1})
    for index, key in enumerate((5, 5, 6, 5)):
        payment = context(T0 + index, key, key, key, key, True)
        assert compiled.evaluate(payment) == reference.evaluate(payment)
        for engine in (compiled, reference):
            engine.observe(payment, POSTED)
        assert_same(compiled, reference)
    assert compiled.tables()["accounts"] == {"size": 1, "capacity": 1, "evictions": 2}


def test_extreme_keys_are_ordinary_keys():
    """0 is a valid key for the index (the empty bucket is marked by its slot, not its key), as is 2^64-1."""
    compiled, reference = engines(CAPACITY)
    for index, (payer, payee) in enumerate(((U64, 0), (0, U64), (U64, U64), (1, 0))):
        payment = context(T0 + index, payer, payee, U64, U64, True)
        assert compiled.evaluate(payment) == reference.evaluate(payment)
        for engine in (compiled, reference):
            engine.observe(payment, POSTED)
        assert_same(compiled, reference)


def test_the_device_table_holds_its_limit_and_evicts_one_past_it():
    """The largest table size of the devices (RULES_DEVICES_TRACKED_MAX) through the compiled index;
    the twin is too slow for the whole limit, the LRU order is checked by the state hash above."""
    compiled, _ = engines(None)
    count = limits.RULES_DEVICES_TRACKED_MAX
    for device in range(1, count + 2):
        compiled.observe(context(T0, 1, 2, device, 0, False), POSTED)
        if device == count:
            assert compiled.tables()["devices"] == {"size": count, "capacity": count, "evictions": 0}
    assert compiled.tables()["devices"] == {"size": count, "capacity": count, "evictions": 1}
    # Device 1 went (least recent): coming back, it starts from zero payments, so one more does
    # not reach the velocity limit (2); the newest device, found with its one payment, does.
    for device, fires in ((1, False), (count + 1, True)):
        payment = context(T0, 1, 2, device, 0, False)
        compiled.observe(payment, POSTED)
        fired = [rule for rule, _, _ in compiled.evaluate(payment).fired]
        assert ("dev-velocity" in fired) is fires, device
