"""Unit vectors (units per line) packed into one integer, for the search's inner loops.

The search compares and subtracts vectors of a few small counts many thousand times per
order; one integer operation per comparison instead of a loop over the lines is what keeps
it fast. Each line gets a field of ``width`` bits whose top bit is a guard: values stay
below it (every vector the search handles is capped at the order's quantities), so a
subtraction that goes below zero in one field clears that field's guard instead of
borrowing from its neighbour.
"""

from __future__ import annotations

from collections.abc import Sequence


class Packing:
    """How to pack vectors whose entries never exceed those of ``need``."""

    __slots__ = ("_guards", "_mask_unit", "_width")

    def __init__(self, need: Sequence[int]) -> None:
        self._width = max(need, default=0).bit_length() + 1
        fields = range(len(need))
        self._guards = sum(1 << (field * self._width + self._width - 1) for field in fields)
        self._mask_unit = (1 << (self._width - 1)) - 1

    def pack(self, values: Sequence[int]) -> int:
        """``values`` (each at most the need of its line) as one integer."""
        return sum(value << (field * self._width) for field, value in enumerate(values))

    def covers(self, supply: int, need: int) -> bool:
        """Whether ``supply`` holds at least ``need`` in every line."""
        guards = self._guards
        return ((supply | guards) - need) & guards == guards

    def remaining(self, need: int, supply: int) -> int:
        """What is still open of ``need`` once ``supply`` is taken (never below 0)."""
        difference = (need | self._guards) - supply
        kept = (difference & self._guards) >> (self._width - 1)
        return difference & (kept * self._mask_unit)
