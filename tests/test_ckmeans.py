"""Optimal 1-D k-means (ckwrap's Ckmeans.1d.dp) against brute force over every clustering."""

import itertools

import numpy as np
import pytest

from hwnet.errors import HwnetError
from hwnet.train.ckmeans import ckmeans


def _withinss(x, labels, centers):
    return float(np.sum((x - centers[labels]) ** 2))


def _brute_force(x, k):
    """The least within-cluster sum of squares over every split of the sorted values into k runs (optimal 1-D
    clusters are contiguous in sorted order)."""
    xs = np.sort(x)
    best = np.inf
    for cuts in itertools.combinations(range(1, len(xs)), k - 1):
        parts = np.split(xs, cuts)
        best = min(best, sum(float(np.sum((p - p.mean()) ** 2)) for p in parts))
    return best


@pytest.mark.parametrize("seed", range(12))
def test_ckmeans_is_optimal(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(4, 11)), int(rng.integers(2, 5))
    x = np.round(rng.standard_normal(n) * rng.choice([0.01, 1.0, 100.0]), 3)
    if len(np.unique(x)) <= k:
        x = x + np.arange(n) * 1e-3
    centers, labels = ckmeans(x, k)
    assert centers.shape == (k,) and labels.shape == (n,) and np.all(np.diff(centers) >= 0)
    for c in range(k):  # every centre is the mean of its members
        assert np.isclose(centers[c], x[labels == c].mean())
    assert _withinss(x, labels, centers) == pytest.approx(_brute_force(x, k), rel=1e-9, abs=1e-12)


def test_fewer_distinct_values_than_clusters():
    centers, labels = ckmeans([2.0, 1.0, 2.0, 1.0], 4)
    assert centers.tolist() == [1.0, 2.0, 2.0, 2.0]
    np.testing.assert_array_equal(centers[labels], [2.0, 1.0, 2.0, 1.0])


def test_bad_inputs():
    for bad in ([], [1.0, np.nan]):
        with pytest.raises(HwnetError, match="ckmeans"):
            ckmeans(bad, 2)
    for k in (0, True, 1.5):
        with pytest.raises(HwnetError, match="k must be a positive integer"):
            ckmeans([1.0, 2.0], k)
