"""One rule for bootstrap percentile intervals: they must contain the estimate they are reported with.

A percentile interval of a skewed or biased statistic (a ratio of pooled sums such as mIoU, a mean of a few heavy-
tailed values) can miss the point estimate; a results file whose value lies outside its own interval is refused on
load. Such an interval is extended to the estimate (and says so in the results), which only makes it more
conservative.
"""

from __future__ import annotations

import math

EXTENDED_NOTE = "percentile bootstrap interval, extended to contain the estimate where it missed it"


def containing(estimate: float, low: float, high: float) -> tuple[float, float]:
    """(low, high) widened just enough to contain `estimate` (unchanged when it already does or is not finite)."""
    if not all(math.isfinite(v) for v in (estimate, low, high)):
        return low, high
    return min(low, estimate), max(high, estimate)
