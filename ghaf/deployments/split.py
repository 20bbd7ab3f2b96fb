"""Sticky weighted traffic assignment between a deployment's variants.

A request that carries a key (a user id, a session id) goes to the variant chosen by
**weighted rendezvous hashing** (highest random weight; Schindelhauer & Schomaker 2005,
"Weighted distributed hash tables"): for every variant, ``u = H(name, key)`` is mapped
into (0, 1), its score is ``-ln(u) / weight``, and the lowest score wins. ``-ln(u)`` is
an Exp(1) draw, so the score is an Exp(weight) draw and variant ``i`` wins with
probability ``weight_i / sum(weights)``. Weights are relative: ``(10, 90)`` and
``(0.1, 0.9)`` assign every key alike.

Why this scheme rather than cutting the hash range into percentage slices: a key's
scores depend only on the key and each variant's own name and weight, so

* raising one variant's weight lowers only its scores: keys move **to** it, none leave
  it, and the others' keys stay put unless they move to it (moving B from 10% to 20%
  keeps every user B had and moves about 10% of users, all to B). With three or more
  variants this needs the others to keep their weights relative to each other, as
  they do when only B's weight is edited; retuning A against C moves keys between them;
* removing a variant moves only its own keys; adding one takes keys only for itself;
* the order in which variants are listed does not matter.

``H`` is BLAKE2b with a fixed personalisation string, never Python's ``hash()``, which is
salted per process: every worker and every restart assign a key alike. Changing
``_PERSON`` or the encoding below reassigns every user, so both are frozen.

Requests without a key go through :meth:`Splitter.choose_random`, a plain weighted draw.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Iterable, Sequence

__all__ = ["Splitter", "choose"]

# Frozen: part of every key's assignment (see the module docstring).
_PERSON = b"ghaf-split-v1"
# 53 bits fill a double's mantissa, so (x + 0.5) * 2**-53 is exact and strictly in (0, 1):
# -ln(u) is then finite and positive for every hash.
_BITS_DROPPED = 64 - 53
_TO_UNIT = 2.0**-53


class Splitter:
    """A deployment's variants and weights, validated once, for per-request choices.

    ``variants`` is ``(name, weight)`` pairs; names must be unique non-empty strings and
    weights finite and ``>= 0`` with at least one ``> 0``. A variant of weight 0 is
    never chosen. Raises ``ValueError`` naming the problem.
    """

    __slots__ = ("_cumulative", "_drawn", "_hashed", "_names", "_weights")

    def __init__(self, variants: Iterable[tuple[str, float]]) -> None:
        pairs = list(variants)
        if not pairs:
            raise ValueError("variants: at least one variant is needed")
        names: list[str] = []
        weights: list[float] = []
        for pair in pairs:
            name, weight = _checked_pair(pair)
            if name in names:
                raise ValueError(f"variants: name {name!r} appears more than once")
            names.append(name)
            weights.append(weight)
        if not any(weight > 0 for weight in weights):
            raise ValueError("variants: at least one weight must be > 0")
        self._names = tuple(names)
        self._weights = tuple(weights)
        positive = sorted((n, w) for n, w in zip(names, weights, strict=True) if w > 0)
        # Name order makes the strict `<` in choose() break (practically impossible)
        # score ties by name.
        self._hashed = tuple((_name_hasher(n), 1.0 / w, n) for n, w in positive)
        self._drawn = tuple(n for n, _ in positive)
        cumulative: list[float] = []
        total = 0.0
        for _, weight in positive:
            total += weight
            cumulative.append(total)
        self._cumulative = tuple(cumulative)

    @property
    def names(self) -> tuple[str, ...]:
        """Variant names, in the order given."""
        return self._names

    @property
    def weights(self) -> tuple[float, ...]:
        """Variant weights, in the order of :attr:`names`."""
        return self._weights

    def choose(self, key: bytes | str) -> str:
        """The variant for ``key``: the same key always gets the same variant.

        ``str`` keys are hashed as UTF-8, so ``"u1"`` and ``b"u1"`` agree.
        """
        data = key.encode() if isinstance(key, str) else key
        best_name = ""
        best_score = math.inf
        for hasher, inverse_weight, name in self._hashed:
            h = hasher.copy()
            h.update(data)
            x = int.from_bytes(h.digest(), "big") >> _BITS_DROPPED
            score = -math.log((x + 0.5) * _TO_UNIT) * inverse_weight
            if score < best_score:
                best_score = score
                best_name = name
        return best_name

    def choose_random(self, *, rng: random.Random | None = None) -> str:
        """A variant drawn at random in proportion to the weights, for keyless requests.

        ``rng`` defaults to the ``random`` module's shared generator.
        """
        r = (rng.random() if rng is not None else random.random()) * self._cumulative[-1]  # noqa: S311
        index = bisect.bisect_right(self._cumulative, r)
        # r * total can round up to total itself; that draw belongs to the last variant.
        return self._drawn[min(index, len(self._drawn) - 1)]

    def __repr__(self) -> str:
        return f"Splitter({list(zip(self._names, self._weights, strict=True))!r})"


def choose(key: bytes | str, variants: Sequence[tuple[str, float]]) -> str:
    """The variant for ``key`` among ``(name, weight)`` pairs (see :class:`Splitter`).

    Validates the variants on every call; a per-request path should build one
    :class:`Splitter` and call its :meth:`Splitter.choose`.
    """
    return Splitter(variants).choose(key)


def _checked_pair(pair: object) -> tuple[str, float]:
    if not isinstance(pair, tuple) or len(pair) != 2:
        raise ValueError(f"variants: each variant must be a (name, weight) pair, got {pair!r}")
    name, weight = pair
    if not isinstance(name, str) or not name:
        raise ValueError(f"variants: a name must be a non-empty string, got {name!r}")
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise ValueError(f"variants: weight of {name!r} must be a number, got {weight!r}")
    weight = float(weight)
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"variants: weight of {name!r} must be finite and >= 0, got {weight!r}")
    return name, weight


def _name_hasher(name: str) -> hashlib.blake2b:
    encoded = name.encode()
    hasher = hashlib.blake2b(digest_size=8, person=_PERSON)
    # Length prefix: (name, key) pairs that concatenate alike, such as ("ab", "c") and
    # ("a", "bc"), must still hash apart.
    hasher.update(len(encoded).to_bytes(4, "big") + encoded)
    return hasher
