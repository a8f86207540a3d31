"""Mean win rate across runs, HELM's definition (`presentation/summarize.py`, `compute_aggregate_row_win_rates`).

Per column: a run's win rate is the share of the other runs with a value that it beats, a tie counting half:
(runs strictly worse + other runs tied / 2) / (runs with a value - 1). Runs without a value in a column are left
out of it (not counted as losing); a column with fewer than two values is skipped. A run's mean win rate is the
mean over the columns where it has a value, or None when it has none.
"""

from collections import Counter
from collections.abc import Sequence


def column_win_rates(values: Sequence[float | None], lower_is_better: bool) -> list[float | None]:
    """Each run's win rate in one column (None for runs without a value, all None below two values)."""
    present = [v for v in values if v is not None]
    if len(present) < 2:
        return [None] * len(values)
    counts = Counter(present)
    wins: dict[float, float] = {}
    below = 0  # runs worse than the current value, walking from the worst value up
    for value in sorted(counts, reverse=lower_is_better):
        wins[value] = below + (counts[value] - 1) / 2
        below += counts[value]
    return [None if v is None else wins[v] / (len(present) - 1) for v in values]


def mean_win_rates(table: Sequence[Sequence[float | None]], lower_is_better: Sequence[bool]) -> list[float | None]:
    """Mean win rate of each row of `table` (rows are runs, columns are metrics, None is a missing value)."""
    per_row: list[list[float]] = [[] for _ in table]
    for column, lower in enumerate(lower_is_better):
        rates = column_win_rates([row[column] for row in table], lower)
        for row, rate in enumerate(rates):
            if rate is not None:
                per_row[row].append(rate)
    return [sum(rates) / len(rates) if rates else None for rates in per_row]
