"""Loading a TOML rule set: clear errors naming the rule and the field, every
limit at its value and one past, a hash that identifies the rule set."""
from __future__ import annotations

import pathlib

import pytest

from core_ext import limits
from core_ext.rules_types import KINDS, Kind, Mode, RuleAction, RuleSetError, load_ruleset, sketch_bits_max

ROOT = pathlib.Path(__file__).resolve().parent.parent


def one_rule(**fields) -> str:
    base = {"id": '"r1"', "kind": '"payer_day_count"', "mode": '"enforce"', "action": '"decline"',
            "reason": '"R1"', "limit": 5}
    base.update(fields)
    body = "\n".join(f"{key} = {value}" for key, value in base.items() if value is not None)
    return "[ruleset]\nname = \"t\"\n[[rules]]\n" + body + "\n"


def q(text: str) -> str:
    return f'"{text}"'


def test_a_valid_rule_compiles_into_parameter_tables():
    ruleset = load_ruleset(one_rule(id=q("daily"), kind=q("payer_day_count"), mode=q("shadow"),
                                    action=q("review"), reason=q("LIM"), limit="[1, 2, 3]"))
    (compiled,) = ruleset.rules
    assert compiled.id == "daily" and compiled.kind == Kind.PAYER_DAY_COUNT
    assert compiled.mode == Mode.SHADOW and compiled.action == RuleAction.REVIEW
    assert compiled.tier == (1, 2, 3) and compiled.version == 1


def test_the_demo_rule_set_uses_every_kind_of_the_catalogue():
    ruleset = load_ruleset((ROOT / "switch" / "demo" / "rules.toml").read_text())
    assert {rule.kind for rule in ruleset.rules} == {kind for kind, _spec in KINDS.values()}


@pytest.mark.parametrize("fields, words", [
    ({"kind": q("no_such_kind")}, ["'r1'", "kind"]),
    ({"mode": q("sometimes")}, ["'r1'", "mode"]),
    ({"action": q("shout")}, ["'r1'", "action"]),
    ({"limit": None}, ["'r1'", "limit", "required"]),
    ({"limit": q("5")}, ["'r1'", "limit", "integer"]),
    ({"limit": "-1"}, ["'r1'", "limit", "outside"]),
    ({"limit": "[1, 2]"}, ["'r1'", "limit", "tier"]),
    ({"limmit": "5"}, ["'r1'", "limmit"]),
    ({"reason": None}, ["'r1'", "reason"]),
    ({"id": q("bad id!")}, ["id"]),
    ({"version": "0"}, ["'r1'", "version"]),
])
def test_an_invalid_rule_is_refused_naming_the_rule_and_field(fields, words):
    with pytest.raises(RuleSetError) as error:
        load_ruleset(one_rule(**fields))
    for word in words:
        assert word in str(error.value)


def test_unknown_top_level_tables_and_bad_toml_are_refused():
    with pytest.raises(RuleSetError, match="TOML"):
        load_ruleset("[[rules]\n")
    with pytest.raises(RuleSetError, match="top-level"):
        load_ruleset("[rulez]\n")


def test_two_rules_with_one_id_or_two_structuring_rules_are_refused():
    text = one_rule() + one_rule().split("[[rules]]\n", 1)[1].join(["[[rules]]\n", ""])
    with pytest.raises(RuleSetError, match="'r1'.*id"):
        load_ruleset(text)
    structuring = ('kind = "structuring"\nmode = "enforce"\naction = "review"\nreason = "S"\n'
                   'threshold_minor = 1000\nband_minor = 100\ncount = 3\n')
    with pytest.raises(RuleSetError, match="only one 'structuring'"):
        load_ruleset(f'[[rules]]\nid = "s1"\n{structuring}[[rules]]\nid = "s2"\n{structuring}')


def rules_text(count: int) -> str:
    return "".join(f'[[rules]]\nid = "r{index}"\nkind = "payer_day_count"\nmode = "enforce"\n'
                   f'action = "decline"\nreason = "R"\nlimit = 5\n' for index in range(count))


def test_rules_per_set_at_the_limit_and_one_past():
    assert len(load_ruleset(rules_text(limits.RULES_PER_SET_MAX)).rules) == limits.RULES_PER_SET_MAX
    with pytest.raises(RuleSetError, match="more than"):
        load_ruleset(rules_text(limits.RULES_PER_SET_MAX + 1))


def blocklist(count: int) -> str:
    entries = ", ".join(str(value) for value in range(count))
    return (f'[[rules]]\nid = "bl"\nkind = "blocklist"\nmode = "enforce"\naction = "decline"\n'
            f'reason = "BL"\nfield = "payer"\nentries = [{entries}]\n')


def test_list_entries_at_the_limit_and_one_past():
    assert len(load_ruleset(blocklist(limits.RULES_LIST_ENTRIES_MAX)).rules[0].members) == limits.RULES_LIST_ENTRIES_MAX
    with pytest.raises(RuleSetError, match="'bl'.*entries"):
        load_ruleset(blocklist(limits.RULES_LIST_ENTRIES_MAX + 1))


def test_name_length_at_the_limit_and_one_past():
    assert load_ruleset(one_rule(id=q("a" * limits.RULES_NAME_BYTES_MAX))).rules[0].id
    with pytest.raises(RuleSetError, match="id"):
        load_ruleset(one_rule(id=q("a" * (limits.RULES_NAME_BYTES_MAX + 1))))


@pytest.mark.parametrize("kind, field, maximum, other", [
    ("burst", "count", limits.RULES_BURST_COUNT_MAX, "interval_seconds = 300"),
    ("burst", "interval_seconds", limits.RULES_DURATION_SECONDS_MAX, "count = 3"),
    ("fan_in", "limit", limits.RULES_DISTINCT_MAX, ""),
    ("pass_through", "percent", limits.RULES_PERCENT_MAX, "inflow_min_minor = 1"),
])
def test_parameter_limits_at_the_limit_and_one_past(kind, field, maximum, other):
    def text(value: int) -> str:
        return (f'[[rules]]\nid = "p"\nkind = "{kind}"\nmode = "enforce"\naction = "review"\n'
                f'reason = "P"\n{field} = {value}\n{other}\n')
    assert load_ruleset(text(maximum)).rules
    with pytest.raises(RuleSetError, match=f"'p'.*{field}"):
        load_ruleset(text(maximum + 1))


def test_config_size_at_the_limit_and_one_past():
    padding = "#" * (limits.RULES_CONFIG_BYTES_MAX - 1) + "\n"
    assert load_ruleset(padding).rules == ()
    with pytest.raises(RuleSetError, match="larger"):
        load_ruleset(padding + " ")


def test_the_hash_identifies_the_content_not_the_layout():
    plain = load_ruleset(one_rule())
    spaced = load_ruleset("# comment\n" + one_rule().replace(" = ", "   =   "))
    changed = load_ruleset(one_rule(limit="6"))
    assert plain.hash == spaced.hash != changed.hash


def test_sketch_thresholds_are_exact_for_small_counts():
    assert [sketch_bits_max(count) for count in (1, 2, 3)] == [1, 2, 3]
    assert sketch_bits_max(limits.RULES_DISTINCT_MAX) < limits.RULES_DISTINCT_MAX


@pytest.mark.parametrize("text", [
    "ruleset = 5\n",
    '[[rules]]\nid = "r"\nkind = [1]\n',
    '[[rules]]\nid = "r"\nkind = "merchant_category_deny"\nmode = ["enforce"]\n',
    '[[rules]]\nid = "r"\nkind = "merchant_category_deny"\nmode = "enforce"\naction = { a = 1 }\n',
])
def test_a_config_of_the_wrong_shape_is_a_rule_set_error_not_a_crash(text):
    # Fuzz finding F3: these raised TypeError/AttributeError, which reload_rules and SIGHUP do not catch.
    with pytest.raises(RuleSetError):
        load_ruleset(text)


@pytest.mark.parametrize("now_ns", [-1, -2766507116355509644])
def test_a_journal_record_with_a_time_before_the_epoch_is_refused_whole(impl, now_ns):
    # Fuzz finding F2: only a corrupt journal holds one; the compiled engine wrote out of bounds on it.
    from core_ext.rules_types import JOURNAL_RECORD, JOURNAL_VERSION
    engine = impl.RuleEngine(load_ruleset('[ruleset]\nname = "journal"\n'))
    before = engine.state_hash()
    good = JOURNAL_RECORD.pack(1_800_000_000 * 10**9, 1, 2, 11, 0, 0, 500, 0)
    bad = JOURNAL_RECORD.pack(now_ns, 1, 2, 11, 0, 0, 500, 0)
    with pytest.raises(ValueError):
        engine.apply_journal(bytes([JOURNAL_VERSION]) + good + bad)
    assert engine.state_hash() == before
