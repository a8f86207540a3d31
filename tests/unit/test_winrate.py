"""Mean win rate as HELM defines it, on examples worked out by hand."""

import pytest

from nextai.eval.winrate import column_win_rates, mean_win_rates


def test_hand_worked_example_with_a_tie_and_a_missing_value():
    # Runs A, B, C. MMLU exact match (higher is better): 0.70, 0.73, 0.70.
    # Stereotypes (race) (lower is better): 0.67, missing, 0.60.
    # MMLU: B beats both (2/2 = 1); A and C beat nobody and tie with each other: (0 + 1/2) / 2 = 0.25.
    # Stereotypes: B has no value and is left out; C beats A (1/1), A beats nobody (0/1).
    # Means: A (0.25 + 0) / 2 = 0.125, B 1 / 1 = 1.0, C (0.25 + 1) / 2 = 0.625.
    table = [[0.70, 0.67], [0.73, None], [0.70, 0.60]]
    assert mean_win_rates(table, [False, True]) == pytest.approx([0.125, 1.0, 0.625])


def test_column_rates_count_ties_as_half_wins():
    # Four runs, two tied in the middle: 0.9 beats 3 -> 1; 0.5 and 0.5 beat one and tie one -> 1.5/3; 0.1 -> 0.
    assert column_win_rates([0.5, 0.9, 0.1, 0.5], lower_is_better=False) == pytest.approx([0.5, 1.0, 0.0, 0.5])
    assert column_win_rates([0.5, 0.9, 0.1, 0.5], lower_is_better=True) == pytest.approx([0.5, 0.0, 1.0, 0.5])


def test_all_equal_runs_all_win_half():
    assert mean_win_rates([[0.3, 0.2], [0.3, 0.2], [0.3, 0.2]], [False, False]) == pytest.approx([0.5] * 3)


def test_columns_with_fewer_than_two_values_are_skipped():
    # The second column has one value: it cannot rank anyone, so the runs are ranked on the first alone.
    assert mean_win_rates([[0.1, 5.0], [0.2, None]], [False, False]) == pytest.approx([0.0, 1.0])


def test_a_run_without_any_comparable_value_has_no_win_rate():
    assert mean_win_rates([[0.1], [0.2], [None]], [False]) == [0.0, 1.0, None]


def test_two_runs_share_each_column():
    # With two runs every column gives 1 + 0 or 0.5 + 0.5, so the two mean win rates add up to 1.
    rates = mean_win_rates([[0.4, 0.1, 0.9], [0.5, 0.1, 0.2]], [False, False, True])
    assert rates == pytest.approx([(0 + 0.5 + 0) / 3, (1 + 0.5 + 1) / 3])
    assert sum(rates) == pytest.approx(1.0)
