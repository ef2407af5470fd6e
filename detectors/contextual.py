"""Contextual Anomaly Detector, Open Source Edition (CAD OSE), for one numeric series.

A port to Python 3 of Mikhail Smirnov's CAD OSE (2016, https://github.com/smirmik/CAD, as
shipped in NAB: ``nab/detectors/context_ose``; MIT/GPL-compatible, see NAB's LICENSE). NAB's
published score for it is 69.9 on the standard profile.

How it works: each value is quantised into ``2**value_bits`` levels over a fixed range and
written as ``value_bits`` binary facts. A *context* is a pair (the facts of the previous
step together with the contexts then active, the facts of this step). The detector learns
every context it sees; a step's anomaly is ``(1 − share of selected contexts that came true
+ share of new contexts among the candidates) / 2``. After a step scores above
``rest_threshold``, the next ``rest_rows`` steps report 0: one alarm per event.

A *spatial anomaly* is added as NAB's own Numenta detector adds it (``SPATIAL_TOLERANCE``
in ``nab/detectors/numenta``): a value beyond the range of the values seen so far by more
than ``spatial_tolerance`` (5 %) of that range's width scores 1, whatever its context —
people who label anomalies mark a value never seen before. It lifted NAB's standard score
from 69.96 to 70.56 (``tianyan bench nab``; 0 turns it off).

The detector learns online (every step is first scored, then learned); only the value range
must be fixed before it starts (``min_value``, ``max_value``).
"""

from __future__ import annotations

import math

#: Offset of the "neuron" facts (active contexts fed back as inputs), above any value fact.
_NEURON_FACT = 2**31
#: Sets of left facts whose matching semi-contexts are remembered (a bound on memory).
_MATCH_CACHE_SIZE = 4096
#: The facts of a value above, and below, the range.
_ABOVE_RANGE_FACT, _BELOW_RANGE_FACT = -1, -2


class _LeftSemiContext:
    __slots__ = ("contexts", "facts")

    def __init__(self, facts: tuple[int, ...]) -> None:
        self.facts = frozenset(facts)
        #: right semi-context id → context id, in the order learnt.
        self.contexts: dict[int, int] = {}


class _ContextMemory:
    """CAD OSE's ``ContextOperator``: semi-contexts and the contexts pairing them.

    The original marks, fact by fact, which facts of every semi-context are present; here a
    semi-context's facts are a frozenset and the marks are set intersections, computed only
    for the semi-contexts a step reads. The results are the same, in the same order.
    """

    def __init__(self, max_left_semi_context_length: int) -> None:
        self.max_left = max_left_semi_context_length
        self.left_ids: dict[int, int] = {}
        self.left: list[_LeftSemiContext] = []
        self.right_ids: dict[int, int] = {}
        self.right: list[frozenset[int]] = []
        #: Per context: [times active, zero-level flag, left hash, right hash].
        self.contexts: list[list[int]] = []
        self.new_context_id: int | bool = False
        #: The left facts last crossed, and how many left semi-contexts existed then.
        self.left_facts: frozenset[int] = frozenset()
        self.left_crossed = 0
        #: left facts → (left semi-contexts checked, the fully matched among them).
        self._matches: dict[frozenset[int], tuple[int, list[int]]] = {}

    def context_by_facts(
        self, new_contexts: list[tuple[tuple[int, ...], tuple[int, ...]]], zero_level: int = 0
    ) -> int | bool:
        """Store each (left facts, right facts) context not yet known; with ``zero_level``,
        whether the one given was new, else how many were."""
        added = 0
        for left_facts, right_facts in new_contexts:
            left_hash, right_hash = hash(left_facts), hash(right_facts)
            left_id = self.left_ids.setdefault(left_hash, len(self.left))
            if left_id == len(self.left):
                self.left.append(_LeftSemiContext(left_facts))
            right_id = self.right_ids.setdefault(right_hash, len(self.right))
            if right_id == len(self.right):
                self.right.append(frozenset(right_facts))
            next_context = len(self.contexts)
            context_id = self.left[left_id].contexts.setdefault(right_id, next_context)
            if context_id == next_context:
                added += 1
                self.contexts.append([0, zero_level, left_hash, right_hash])
                if zero_level:
                    self.new_context_id = context_id
                    return True
            elif zero_level:
                self.contexts[context_id][1] = 1
                return False
        return added

    def cross_left(self, facts: tuple[int, ...]) -> None:
        """The left side: these facts, against the left semi-contexts known now."""
        self.left_facts = frozenset(facts)
        self.left_crossed = len(self.left)

    def _fully_matched(self) -> list[int]:
        """Indices of the left semi-contexts crossed last whose every fact was present.

        Semi-contexts are only ever appended, so the answer for a set of facts is extended,
        never recomputed: periodic series revisit the same few sets."""
        facts = self.left_facts
        checked, found = self._matches.get(facts, (0, []))
        if checked < self.left_crossed:
            if len(self._matches) >= _MATCH_CACHE_SIZE:
                self._matches.clear()
            found = found + [
                k for k in range(checked, self.left_crossed) if self.left[k].facts <= facts
            ]
            self._matches[facts] = (self.left_crossed, found)
        return found

    def active_contexts(
        self, facts: tuple[int, ...], new_context: bool
    ) -> tuple[list[list[int]], int, list[tuple[tuple[int, ...], tuple[int, ...]]]]:
        """(contexts that came true, contexts selected by their left side, candidate new
        contexts from partial matches) — CAD OSE's ``updateContextsAndGetActive`` after
        crossing the right side with ``facts``."""
        right_facts = frozenset(facts)
        left_facts = self.left_facts
        right_seen: dict[int, frozenset[int]] = {}
        active = []
        selected = 0
        candidates = []
        if new_context:
            lefts = self.left[: self.left_crossed]
        else:  # only the fully matched ones matter: looked up, not scanned
            lefts = [self.left[k] for k in self._fully_matched()]
        for left in lefts:
            if new_context:
                crossed = left.facts & left_facts
                if not crossed:
                    continue
                full = len(crossed) == len(left.facts)
            else:
                crossed, full = left.facts, True
            for right_id, context_id in left.contexts.items():
                if self.new_context_id == context_id:
                    continue
                if full:
                    selected += 1
                values = self.contexts[context_id]
                right_crossed = right_seen.get(right_id)
                if right_crossed is None:
                    right_crossed = right_seen[right_id] = self.right[right_id] & right_facts
                if not right_crossed:
                    continue
                if full and len(right_crossed) == len(self.right[right_id]):
                    values[0] += 1
                    active.append([context_id, values[0], values[2], values[3]])
                    continue
                if values[1] and new_context and len(crossed) <= self.max_left:
                    candidates.append((tuple(sorted(crossed)), tuple(sorted(right_crossed))))
        self.new_context_id = False
        return active, selected, candidates


class ContextualDetector:
    """CAD OSE over one series; :meth:`score_one` learns the value as it scores it.

    Parameters
    ----------
    min_value, max_value
        The value range quantised (values outside it fall in the end levels).
    rest_threshold
        A step scoring above it silences the next ``rest_rows`` steps (CAD OSE: 0.75).
    rest_rows
        See ``rest_threshold``; NAB runs CAD OSE with its probation / 5.
    max_left_semi_context_length, max_active_neurons, value_bits
        CAD OSE's own parameters (7, 15, 3).
    spatial_tolerance
        A value beyond the range seen so far by more than this share of its width scores 1
        (NAB's Numenta detector: 0.05); 0 scores contexts only.

    Examples
    --------
    >>> det = ContextualDetector(0.0, 1.0, rest_rows=10)
    >>> scores = [det.score_one(x) for x in [0.0, 1.0] * 200]
    >>> sorted(scores[-100:])[-2] < 0.5  # a learnt alternation (at most one step at 0.5)
    True
    >>> det.score_one(0.5) > 0.5  # a value never seen in this context
    True
    """

    def __init__(
        self,
        min_value: float,
        max_value: float,
        rest_threshold: float = 0.75,
        rest_rows: float = 30,
        max_left_semi_context_length: int = 7,
        max_active_neurons: int = 15,
        value_bits: int = 3,
        spatial_tolerance: float = 0.05,
    ) -> None:
        if not spatial_tolerance >= 0:
            raise ValueError(f"spatial_tolerance: {spatial_tolerance} is not a share >= 0")
        self.min_value = float(min_value)
        self.spatial_tolerance = spatial_tolerance
        #: The smallest and largest value seen so far (None before the first).
        self.seen_min: float | None = None
        self.seen_max: float | None = None
        self.rest_rows = max(1, int(rest_rows))
        self.rest_threshold = rest_threshold
        self.max_active_neurons = max_active_neurons
        self.value_bits = value_bits
        self.max_level = 2**value_bits - 1
        value_range = float(max_value) - self.min_value
        self.level_width = (value_range or self.max_level) / self.max_level
        self.memory = _ContextMemory(max_left_semi_context_length)
        self.left_facts: tuple[int, ...] = ()
        self.recent: list[float] = [1.0]

    def _step(self, facts: tuple[int, ...]) -> tuple[float, float]:
        memory = self.memory
        candidates_seen: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()
        new_context = False
        if self.left_facts and facts:
            zero_level = (self.left_facts, facts)
            candidates_seen.add(zero_level)
            new_context = bool(memory.context_by_facts([zero_level], zero_level=1))
        active, selected, candidates = memory.active_contexts(facts, new_context)
        candidates_seen.update(candidates)
        share_active = len(active) / selected if selected else 0.0
        active.sort(key=lambda c: (c[1], c[2], c[3]))
        neurons = {_NEURON_FACT + c[0] for c in active[-self.max_active_neurons :]}
        self.left_facts = tuple(sorted(set(facts) | neurons))
        # Stored before the left side is crossed, so that new contexts take part at once.
        added = memory.context_by_facts(candidates) if candidates else 0
        memory.cross_left(self.left_facts)
        added = int(added) + (1 if new_context else 0)
        share_new = added / len(candidates_seen) if new_context and candidates_seen else 0.0
        return share_active, share_new

    def score_one(self, x: float) -> float:
        """The step's anomaly in [0, 1] (0 while resting after an alarm); learns ``x``."""
        level = math.floor((x - self.min_value) / self.level_width)
        if level > self.max_level:  # outside the range: a fact no value inside it has
            facts: tuple[int, ...] = (_ABOVE_RANGE_FACT,)
        elif level < 0:
            facts = (_BELOW_RANGE_FACT,)
        else:
            facts = tuple(bit * 2 + ((level >> bit) & 1) for bit in range(self.value_bits))
        share_active, share_new = self._step(facts)
        score = (1.0 - share_active + share_new) / 2.0
        resting = max(self.recent[-self.rest_rows :]) >= self.rest_threshold
        if self.spatial_tolerance and not resting and self._beyond_seen(x):
            score = 1.0
        self.seen_min = x if self.seen_min is None else min(self.seen_min, x)
        self.seen_max = x if self.seen_max is None else max(self.seen_max, x)
        self.recent.append(score)
        if len(self.recent) > 2 * self.rest_rows + 1:
            del self.recent[: -self.rest_rows - 1]
        return 0.0 if resting else score

    def _beyond_seen(self, x: float) -> bool:
        """Whether ``x`` lies beyond the values seen so far by more than the tolerance."""
        lo, hi = self.seen_min, self.seen_max
        if lo is None or hi is None or lo == hi:
            return False
        margin = (hi - lo) * self.spatial_tolerance
        return x > hi + margin or x < lo - margin
