# -*- test-case-name: tests.test_common -*-
"""
The package's one percentile rule, shared by the receiver's statistics, the
sender's summaries and the benchmarks, so that a p99 means the same figure
wherever it is printed.
"""

from __future__ import annotations

import math
from typing import Iterable

__all__ = ["percentile"]


def percentile(values: Iterable[float], fraction: float):
    """
    The nearest-rank percentile of C{values}: the smallest value such that at
    least C{fraction} of all the values are less than or equal to it.

    With C{n} values sorted ascending, that is the value at 1-based rank
    C{ceil(fraction * n)}, clamped to C{1..n}.  It is always one of the
    values (never an interpolation), so a p99 of latencies is a latency some
    frame really had; C{fraction} 0 gives the smallest value and 1 the
    largest.  For 1..100, p50 is 50, p95 is 95 and p99 is 99.

    @param values: numbers in any order (an iterable is read once).
    @param fraction: the percentile as a fraction of 1, C{0.95} for p95.
    @raise ValueError: if C{fraction} is outside C{[0, 1]}.
    @return: one of C{values}, or C{None} when there are none.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"percentile fraction {fraction!r} is not within [0, 1]")
    ordered = sorted(values)
    if not ordered:
        return None
    # The product is rounded first so that, for example, 0.07 * 100
    # (7.000000000000001 in binary floating point) is rank 7, not 8.
    rank = math.ceil(round(fraction * len(ordered), 9))
    return ordered[min(max(rank, 1), len(ordered)) - 1]
