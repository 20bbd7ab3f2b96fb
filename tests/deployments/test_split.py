"""Sticky weighted splits: shares match the weights, keys stay where they were when
weights move, and every process assigns a key alike."""

from __future__ import annotations

import json
import math
import os
import random
import re
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest

from ghaf.deployments.split import Splitter, choose

KEYS = [f"user-{i}" for i in range(100_000)]
# 5 binomial standard deviations at n = 100,000 are at most 0.008 (p = 0.5).
SHARE_TOLERANCE = 0.008


def _shares(splitter: Splitter, keys: list[str]) -> dict[str, float]:
    counts = Counter(splitter.choose(key) for key in keys)
    return {name: counts[name] / len(keys) for name in splitter.names}


@pytest.mark.parametrize(
    "variants",
    [
        [("control", 90.0), ("treatment", 10.0)],
        [("a", 0.2), ("b", 0.3), ("c", 0.5)],
    ],
)
def test_shares_of_100k_keys_match_the_weights(variants: list[tuple[str, float]]) -> None:
    shares = _shares(Splitter(variants), KEYS)
    total = sum(weight for _, weight in variants)
    for name, weight in variants:
        assert shares[name] == pytest.approx(weight / total, abs=SHARE_TOLERANCE), name


def test_weights_are_relative_and_order_does_not_matter() -> None:
    keys = KEYS[:20_000]
    percent = Splitter([("a", 20), ("b", 30), ("c", 50)])
    fraction_reordered = Splitter([("c", 0.5), ("a", 0.2), ("b", 0.3)])
    assert [percent.choose(k) for k in keys] == [fraction_reordered.choose(k) for k in keys]


def test_a_zero_weight_variant_gets_nothing() -> None:
    splitter = Splitter([("a", 1.0), ("off", 0.0), ("b", 1.0)])
    assert "off" not in {splitter.choose(key) for key in KEYS[:20_000]}
    rng = random.Random(0)
    assert "off" not in {splitter.choose_random(rng=rng) for _ in range(20_000)}
    assert splitter.names == ("a", "off", "b")


def test_raising_b_from_10_to_20_percent_keeps_every_key_b_had() -> None:
    before = Splitter([("a", 90.0), ("b", 10.0)])
    after = Splitter([("a", 80.0), ("b", 20.0)])
    old = [before.choose(key) for key in KEYS]
    new = [after.choose(key) for key in KEYS]
    moved = [(o, n) for o, n in zip(old, new, strict=True) if o != n]
    assert all(n == "b" for o, n in zip(old, new, strict=True) if o == "b")
    assert set(moved) == {("a", "b")}
    # The least any scheme can move is the 10 points b gained.
    assert len(moved) / len(KEYS) == pytest.approx(0.10, abs=SHARE_TOLERANCE)


def test_raising_one_of_three_moves_keys_only_to_it() -> None:
    keys = KEYS[:50_000]
    before = Splitter([("a", 50.0), ("b", 30.0), ("c", 20.0)])
    # c from 20% to 30.4%; a and b shrink but keep their 5:3 ratio.
    after = Splitter([("a", 50.0), ("b", 30.0), ("c", 35.0)])
    changed = {(before.choose(k), after.choose(k)) for k in keys} - {
        ("a", "a"),
        ("b", "b"),
        ("c", "c"),
    }
    assert changed == {("a", "c"), ("b", "c")}


def test_removing_a_variant_moves_only_its_own_keys() -> None:
    keys = KEYS[:50_000]
    before = Splitter([("a", 50.0), ("b", 30.0), ("c", 20.0)])
    after = Splitter([("a", 50.0), ("c", 20.0)])
    old = [before.choose(k) for k in keys]
    new = [after.choose(k) for k in keys]
    assert all(o == n for o, n in zip(old, new, strict=True) if o != "b")
    freed = Counter(n for o, n in zip(old, new, strict=True) if o == "b")
    # b's keys are shared out between the survivors in proportion to their weights.
    assert freed["a"] / (freed["a"] + freed["c"]) == pytest.approx(50 / 70, abs=0.02)


def test_a_key_always_gets_the_same_variant_and_str_equals_utf8_bytes() -> None:
    variants = [("a", 0.2), ("b", 0.3), ("c", 0.5)]
    splitter = Splitter(variants)
    for key in KEYS[:200]:
        first = splitter.choose(key)
        assert {splitter.choose(key) for _ in range(3)} == {first}
        assert splitter.choose(key.encode()) == first
        assert choose(key, variants) == first
    assert splitter.choose("ünïcode") == splitter.choose("ünïcode".encode())


def test_assignments_are_frozen_across_releases() -> None:
    # Changing the hash, its personalisation or the encoding would reassign every user
    # of every running experiment; these were computed when the scheme was written.
    splitter = Splitter([("a", 20), ("b", 30), ("c", 50)])
    expected = ["c", "a", "a", "a", "a", "b", "b", "c", "a", "c", "c", "b"]
    assert [splitter.choose(f"user-{i}") for i in range(12)] == expected


def test_another_process_with_another_hash_seed_assigns_keys_alike() -> None:
    variants = [("control", 70.0), ("treatment", 20.0), ("holdout", 10.0)]
    keys = KEYS[:2000]
    script = (
        "import json, sys\n"
        "from ghaf.deployments.split import Splitter\n"
        "variants, keys = json.load(sys.stdin)\n"
        "s = Splitter([tuple(v) for v in variants])\n"
        "print(json.dumps([s.choose(k) for k in keys]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps([variants, keys]),
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    splitter = Splitter(variants)
    assert json.loads(result.stdout) == [splitter.choose(k) for k in keys]


def test_choose_random_draws_in_proportion_and_is_seedable() -> None:
    splitter = Splitter([("a", 1.0), ("b", 3.0)])
    rng = random.Random(7)
    draws = Counter(splitter.choose_random(rng=rng) for _ in range(40_000))
    assert draws["b"] / 40_000 == pytest.approx(0.75, abs=0.01)
    again = random.Random(7)
    replay = Counter(splitter.choose_random(rng=again) for _ in range(40_000))
    assert replay == draws


def test_choose_random_copes_with_a_draw_that_rounds_up_to_the_total() -> None:
    class _Top(random.Random):
        def random(self) -> float:
            return math.nextafter(1.0, 0.0)

    splitter = Splitter([("a", 0.1), ("b", 0.2), ("off", 0.0)])
    assert splitter.choose_random(rng=_Top()) == "b"


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ([], "at least one variant"),
        ([("a", 0.0), ("b", 0.0)], "at least one weight must be > 0"),
        ([("a", 1.0), ("a", 2.0)], "'a' appears more than once"),
        ([("", 1.0)], "non-empty string"),
        ([(3, 1.0)], "non-empty string"),
        ([("a", -0.1)], "weight of 'a' must be finite and >= 0"),
        ([("a", math.nan)], "weight of 'a' must be finite and >= 0"),
        ([("a", math.inf)], "weight of 'a' must be finite and >= 0"),
        ([("a", True)], "weight of 'a' must be a number"),
        ([("a", "0.5")], "weight of 'a' must be a number"),
        ([("a", 1.0, "extra")], "(name, weight) pair"),
    ],
)
def test_bad_variants_are_refused_naming_the_problem(variants: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Splitter(variants)
    with pytest.raises(ValueError, match=re.escape(message)):
        choose("k", variants)
