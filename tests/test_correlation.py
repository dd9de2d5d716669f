import pytest

from rest_cli.correlation import _ranks, kendall_tau, spearman


def test_tied_values_share_their_mean_rank_wherever_they_stand():
    assert _ranks([3.0, 1.0, 3.0, 1.0, 2.0]).tolist() == [3.5, 0.5, 3.5, 0.5, 2.0]


def test_spearman_with_ties_is_pearson_of_mean_ranks():
    # x ranks [3.5, 0.5, 3.5, 0.5, 2], y ranks [4, 0, 3, 1, 2]: Pearson of those, worked by hand:
    # deviations from the mean 2: x (1.5, -1.5, 1.5, -1.5, 0), y (2, -2, 1, -1, 0);
    # sum xy 9, sum x^2 9, sum y^2 10: rho = 9 / sqrt(90) = 0.9487.
    assert spearman([3, 1, 3, 1, 2], [5, 1, 4, 2, 3]) == pytest.approx(9 / 90 ** 0.5)
    assert kendall_tau([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
