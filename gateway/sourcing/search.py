"""Choosing the set of locations for a multi-location fulfilment (store delivery, shipping).

A set covers the basket when, for every line, its members together hold the quantity (a line
may be split). Sets are ranked by the objective ``(size, total distance, total cost, sorted
ids)``, compared lexicographically. Distances and costs are summed exactly (each float is
turned into an integer on a common binary scale), so the ranking depends neither on rounding
nor on the order of the members.

The exact search tries sizes 1, 2, ... and stops at the first size with a covering set. Size 1
is a linear scan (the common case). For a larger size ``k`` it first drops every option that
``k`` others dominate (they offer at least as much of every line and come earlier in the
order distance, cost, id): the best set can always swap such an option for a dominator it
does not hold yet, and be better. Then a depth-first search over the rest, in that order,
with three prunings that keep it exact:

- coverage: the rest of the need must fit in the ``r`` largest offers, per line, of the
  options still to choose from, or no later choice can succeed either;
- distance: the chosen distances plus the next ``r`` (the smallest left) must not exceed the
  best set's total distance;
- usefulness: an option that adds nothing to the need still open is skipped, since at the
  smallest covering size every member of a covering set adds something.

The search visits at most ``SEARCH_BUDGET`` nodes per order. If the budget runs out, the best
set found at that size is used, or else the greedy heuristic's, and the result is marked
inexact. The greedy heuristic (also used for large baskets) first tries every single
location, then repeatedly adds the location that covers the most units still open (ties: the
nearer, the cheaper, the lower id) and finally drops members the rest can do without.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from .packing import Packing

# Stands in for an unknown distance: farther than any two points on Earth, so a set with
# fewer unknown distances always wins among sets of one size, yet sums stay finite.
UNKNOWN_DISTANCE_KM = 1_000_000.0

# Search nodes per order, over all sizes tried. With ~60 options, 1-5 lines and 3 shipments a
# search takes a few dozen nodes typically and about a thousand at worst; the budget bounds
# the pathological ones (many options, none dominating another) to a few milliseconds.
SEARCH_BUDGET = 5_000

Need = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Option:
    """A location as the search sees it: ``supply[i]`` units usable for line ``i``."""

    location_id: str
    distance_km: float
    cost: float
    supply: Need


@dataclass(frozen=True, slots=True)
class Choice:
    """The chosen locations, nearest first; ``exact`` if proven best."""

    options: tuple[Option, ...]
    exact: bool


@dataclass(frozen=True, slots=True)
class _Ranked:
    """An option with its distance and cost as exact integers on a common scale."""

    option: Option
    distance: int
    cost: int

    @property
    def preference(self) -> tuple[int, int, str]:
        return (self.distance, self.cost, self.option.location_id)


def choose(options: Sequence[Option], need: Need, max_size: int, exact: bool) -> Choice | None:
    """The best set of at most ``max_size`` options covering ``need`` (exact search), or a
    good one (greedy, when ``exact`` is False); None when none is found."""
    ranked = _rank(options)
    single = next((r for r in ranked if _covers(r.option.supply, need)), None)
    if single is not None:
        return Choice((single.option,), exact=True)
    if max_size == 1 or not ranked:
        return None
    if not exact:
        return _greedy(ranked, need, max_size)
    budget = SEARCH_BUDGET
    for size in range(2, max_size + 1):
        search = _SubsetSearch(_undominated(ranked, size, need), need, size, budget)
        found = search.run()
        if found is not None:
            return Choice(tuple(r.option for r in found), exact=search.complete)
        if not search.complete:
            return _greedy(ranked, need, max_size)
        budget = search.budget
    return None


def _remaining(need: Need, supply: Need) -> Need:
    """What is still open of ``need`` once ``supply`` is taken."""
    pairs = zip(need, supply, strict=True)
    return tuple(wanted - offered if wanted > offered else 0 for wanted, offered in pairs)


def _covers(supply: Need, need: Need) -> bool:
    return all(offered >= wanted for offered, wanted in zip(supply, need, strict=True))


def _rank(options: Sequence[Option]) -> list[_Ranked]:
    """The options in preference order with exact integer distances and costs."""
    distances = _exact([option.distance_km for option in options])
    costs = _exact([option.cost for option in options])
    ranked = [_Ranked(o, d, c) for o, d, c in zip(options, distances, costs, strict=True)]
    return sorted(ranked, key=lambda r: r.preference)


def _exact(values: Sequence[float]) -> list[int]:
    """Finite non-negative floats as integers on a common scale: sums and comparisons of the
    results are exact, and order is kept."""
    ratios = [value.as_integer_ratio() for value in values]
    scale = max((denominator for _, denominator in ratios), default=1)
    return [numerator * (scale // denominator) for numerator, denominator in ratios]


def _undominated(ranked: Sequence[_Ranked], size: int, need: Need) -> list[_Ranked]:
    """``ranked`` without the options that ``size`` earlier kept options dominate (offer at
    least as much of every line). Counting kept dominators suffices: a dropped dominator's
    own ``size`` dominators dominate as well."""
    packing = Packing(need)
    kept: list[_Ranked] = []
    kept_supplies: list[int] = []
    for candidate in ranked:
        supply = packing.pack(candidate.option.supply)
        dominators = 0
        for other in kept_supplies:
            if packing.covers(other, supply):
                dominators += 1
                if dominators == size:
                    break
        else:
            kept.append(candidate)
            kept_supplies.append(supply)
    return kept


class _SubsetSearch:
    """The best covering set of exactly ``size`` options (see the module docstring)."""

    def __init__(self, ranked: Sequence[_Ranked], need: Need, size: int, budget: int) -> None:
        self._packing = Packing(need)
        self._ranked = ranked
        self._supplies = [self._packing.pack(r.option.supply) for r in ranked]
        self._distances = [r.distance for r in ranked]
        self._windows = _prefix_sums(self._distances)
        self._tops = _suffix_tops(ranked, need, size, self._packing)
        self._need = self._packing.pack(need)
        self._size = size
        self.budget = budget  # search nodes left
        self._best: tuple[int, ...] | None = None
        self._best_rank: tuple[int, int, tuple[str, ...]] | None = None

    @property
    def complete(self) -> bool:
        """Whether the search ran to the end within its budget."""
        return self.budget > 0

    def run(self) -> list[_Ranked] | None:
        if self._packing.covers(self._tops[0][self._size], self._need):
            self._extend(0, [], self._need, self._size, 0)
        return None if self._best is None else [self._ranked[i] for i in self._best]

    def _extend(self, start: int, chosen: list[int], need: int, left: int, distance: int) -> None:
        covers, remaining = self._packing.covers, self._packing.remaining
        windows, tops = self._windows, self._tops
        for index in range(start, len(self._ranked) - left + 1):
            if self.budget <= 0 or not covers(tops[index][left], need):
                return
            self.budget -= 1
            nearest = distance + windows[index + left] - windows[index]
            if self._best_rank is not None and nearest > self._best_rank[0]:
                return
            rest = remaining(need, self._supplies[index])
            if rest == need:
                continue
            chosen.append(index)
            if left > 1:
                self._extend(index + 1, chosen, rest, left - 1, distance + self._distances[index])
            elif rest == 0:
                self._offer(tuple(chosen))
            chosen.pop()

    def _offer(self, chosen: tuple[int, ...]) -> None:
        members = [self._ranked[i] for i in chosen]
        rank = (
            sum(member.distance for member in members),
            sum(member.cost for member in members),
            tuple(sorted(member.option.location_id for member in members)),
        )
        if self._best_rank is None or rank < self._best_rank:
            self._best, self._best_rank = chosen, rank


def _prefix_sums(values: Sequence[int]) -> list[int]:
    sums = [0]
    for value in values:
        sums.append(sums[-1] + value)
    return sums


def _suffix_tops(
    ranked: Sequence[_Ranked], need: Need, size: int, packing: Packing
) -> list[list[int]]:
    """``tops[i][r]``, packed: per line, the most units ``r`` options of ``ranked[i:]`` offer
    together (the sum of the ``r`` largest offers), capped at the line's need."""
    largest: list[list[int]] = [[] for _ in need]  # ascending, at most ``size`` each
    tops = [[0] * (size + 1)]
    for member in reversed(ranked):
        for line, offered in enumerate(member.option.supply):
            bisect.insort(largest[line], offered)
            if len(largest[line]) > size:
                del largest[line][0]
        tops.append([packing.pack([min(sum(values[len(values) - r :]) if r else 0, wanted)
                                   for values, wanted in zip(largest, need, strict=True)])
                     for r in range(size + 1)])  # fmt: skip
    tops.reverse()
    return tops


def _greedy(ranked: Sequence[_Ranked], need: Need, max_size: int) -> Choice | None:
    """Most units first, then the nearest; then drop members the others can do without."""
    chosen: list[_Ranked] = []
    open_need = need
    pool = list(ranked)
    while any(open_need) and pool and len(chosen) < max_size:
        best = min(pool, key=lambda r: (-_gain(r.option, open_need), r.preference))
        if _gain(best.option, open_need) == 0:
            return None
        chosen.append(best)
        pool.remove(best)
        open_need = _remaining(open_need, best.option.supply)
    if any(open_need):
        return None
    return Choice(_without_spare(chosen, need), exact=False)


def _gain(option: Option, need: Need) -> int:
    return sum(min(offered, wanted) for offered, wanted in zip(option.supply, need, strict=True))


def _without_spare(chosen: list[_Ranked], need: Need) -> tuple[Option, ...]:
    """``chosen`` less the members (farthest first) whose removal still covers ``need``."""
    kept = sorted(chosen, key=lambda r: r.preference)
    for member in reversed(kept[:]):
        others = [other for other in kept if other is not member]
        total = tuple(sum(o.option.supply[line] for o in others) for line in range(len(need)))
        if _covers(total, need):
            kept = others
    return tuple(member.option for member in kept)
