"""The semidiscrete decomposition against its definition: :func:`best_ternary` against brute force over every
ternary vector, the greedy terms' exact residual identity, exact recovery of a ternary rank-one matrix, the
bounds that hold for every SDD (the truncated SVD below it, the MAX start's guaranteed decrease above it), and
the input checks."""

import itertools

import numpy as np
import pytest

from hwnet.errors import HwnetError
from hwnet.train.sdd import best_ternary, sdd, sdd_error


def _objective(x, s):
    x = np.asarray(x, dtype=np.float64)
    return (x @ s) ** 2 / (x @ x)


def _all_ternary(n):
    """Every nonzero vector of {-1, 0, 1}**n, one per row."""
    rows = np.array(list(itertools.product((-1, 0, 1), repeat=n)), dtype=np.float64)
    return rows[np.any(rows != 0, axis=1)]


def _brute_force(s):
    """(the best objective over all nonzero ternary x, the smallest support among the x attaining it)."""
    candidates = _all_ternary(len(s))
    values = (candidates @ s) ** 2 / np.sum(candidates * candidates, axis=1)
    best = values.max()
    attaining = np.isclose(values, best, rtol=1e-12, atol=0)
    return best, int(np.count_nonzero(candidates[attaining], axis=1).min())


def _check_ternary(x, n):
    assert x.dtype == np.int64 and x.shape == (n,)
    assert set(np.unique(x).tolist()) <= {-1, 0, 1}
    assert np.any(x != 0)


@pytest.mark.parametrize("n", range(1, 8))
def test_best_ternary_matches_brute_force_on_gaussian_vectors(n):
    rng = np.random.default_rng(100 + n)
    for _ in range(40):
        s = rng.standard_normal(n) * rng.choice([1e-3, 1.0, 1e3])
        x = best_ternary(s)
        _check_ternary(x, n)
        best, _ = _brute_force(s)
        assert _objective(x, s) == pytest.approx(best, rel=1e-12)
        assert x @ s >= 0  # the optimum is oriented along s, so x . s / sqrt(nnz) is maximized too


@pytest.mark.parametrize("n", range(1, 8))
def test_best_ternary_matches_brute_force_with_ties_and_zeros(n):
    """Small integers give repeated magnitudes, zeros and tied supports; ties in J must go to the smallest J."""
    rng = np.random.default_rng(200 + n)
    for _ in range(60):
        s = rng.integers(-3, 4, size=n).astype(np.float64)
        x = best_ternary(s)
        _check_ternary(x, n)
        best, smallest_support = _brute_force(s)
        assert _objective(x, s) == pytest.approx(best, rel=1e-12, abs=1e-300)
        assert np.count_nonzero(x) == smallest_support


def test_best_ternary_tie_break_and_zero_rules():
    # J = 1 gives 3**2 / 1 = 9 and J = 4 gives 6**2 / 4 = 9 (J = 2, 3: 8, 8.33): the smaller support wins.
    assert best_ternary([3.0, 1.0, 1.0, 1.0]).tolist() == [1, 0, 0, 0]
    assert best_ternary([-1.0, 3.0, -1.0, 1.0]).tolist() == [0, 1, 0, 0]
    assert best_ternary([0.0, 0.0, 0.0]).tolist() == [1, 0, 0]  # sign(0) -> +1 only because x must be nonzero
    assert best_ternary([0.0, -2.0, 0.0]).tolist() == [0, -1, 0]
    assert best_ternary([1.0, -1.0, 0.0, 0.0]).tolist() == [1, -1, 0, 0]
    assert best_ternary(np.array([5, -4, 1])).tolist() == [1, -1, 0]  # integer input: 81/2 > 25 > 100/3


def test_best_ternary_reaches_its_harmonic_lower_bound():
    rng = np.random.default_rng(3)
    for n in (1, 5, 50, 500):
        harmonic = np.sum(1.0 / np.arange(1, n + 1))
        for _ in range(20):
            s = rng.standard_normal(n) ** 3  # heavy-tailed: far from a flat |s|
            assert _objective(best_ternary(s), s) >= (s @ s) / harmonic * (1 - 1e-12)


def _gaussian(m, n, seed):
    return np.random.default_rng(seed).standard_normal((m, n))


def test_sdd_shapes_values_and_positive_scales():
    W = _gaussian(12, 9, seed=1)
    X, d, Y = sdd(W, 15)  # more terms than min(m, n) is allowed
    assert X.shape == (12, 15) and Y.shape == (9, 15) and d.shape == (15,)
    assert X.dtype == np.int64 and Y.dtype == np.int64 and d.dtype == np.float64
    assert set(np.unique(X).tolist()) <= {-1, 0, 1} and set(np.unique(Y).tolist()) <= {-1, 0, 1}
    assert np.all(d > 0)
    assert np.all(np.any(X != 0, axis=0)) and np.all(np.any(Y != 0, axis=0))


def test_sdd_is_deterministic():
    W = _gaussian(20, 16, seed=2)
    first, again = sdd(W, 10), sdd(W, 10)
    for a, b in zip(first, again):
        assert np.array_equal(a, b)
    assert np.array_equal(sdd(W.tolist(), 10)[1], first[1])  # nested lists are accepted


def test_each_term_removes_exactly_its_energy_and_the_error_never_increases():
    W = _gaussian(18, 14, seed=3)
    rank = 30
    X, d, Y = sdd(W, rank)
    residual = W.copy()
    for k in range(rank):
        x, y = X[:, k], Y[:, k]
        before = np.sum(residual * residual)
        residual = residual - d[k] * np.outer(x, y)
        after = np.sum(residual * residual)
        removed = d[k] ** 2 * (x @ x) * (y @ y)
        # ||R - d x y^T||^2 = ||R||^2 - d^2 ||x||^2 ||y||^2 exactly when d is the least-squares scale
        assert before - after == pytest.approx(removed, rel=1e-9, abs=1e-12 * np.sum(W * W))
        assert d[k] == pytest.approx((x @ (W - (X[:, :k] * d[:k]) @ Y[:, :k].T) @ y) / ((x @ x) * (y @ y)),
                                     rel=1e-12)
    assert sdd_error(W, X, d, Y) == pytest.approx(np.sqrt(np.sum(residual * residual)), rel=1e-12)
    # Separate calls: the greedy terms of rank k are the first k of rank k + 1, so the error never goes up.
    errors = [sdd_error(W, *sdd(W, k)) for k in range(1, 16)]
    assert all(a >= b for a, b in zip(errors, errors[1:]))
    assert errors[-1] < errors[0]
    Xk, dk, Yk = sdd(W, 7)
    assert np.array_equal(Xk, X[:, :7]) and np.array_equal(Yk, Y[:, :7]) and np.array_equal(dk, d[:7])


def test_every_term_takes_at_least_the_max_start_guarantee():
    """The MAX start's first half step alone removes >= ||R||^2 / (n H_m) (module docstring)."""
    for seed, (m, n) in enumerate([(32, 24), (7, 40), (50, 3)]):
        W = _gaussian(m, n, seed=10 + seed) * np.linspace(0.1, 3, n)  # unequal column scales
        X, d, Y = sdd(W, 20)
        guarantee = 1.0 / (n * np.sum(1.0 / np.arange(1, m + 1)))
        residual = W.copy()
        for k in range(20):
            removed = d[k] ** 2 * (X[:, k] @ X[:, k]) * (Y[:, k] @ Y[:, k])
            assert removed >= guarantee * np.sum(residual * residual) * (1 - 1e-12)
            residual -= d[k] * np.outer(X[:, k], Y[:, k])


def test_more_iterations_never_give_a_worse_first_term():
    for seed in range(20):
        W = _gaussian(16, 12, seed=seed)
        energy = []
        for iterations in (1, 2, 10):
            X, d, Y = sdd(W, 1, iterations=iterations)
            energy.append(d[0] ** 2 * (X[:, 0] @ X[:, 0]) * (Y[:, 0] @ Y[:, 0]))
        assert energy[0] <= energy[1] * (1 + 1e-12) and energy[1] <= energy[2] * (1 + 1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_exact_recovery_of_a_ternary_rank_one_matrix(seed):
    rng = np.random.default_rng(seed)
    m, n = rng.integers(3, 30, size=2)
    x1 = rng.integers(-1, 2, size=m)
    y1 = rng.integers(-1, 2, size=n)
    x1[rng.integers(m)] = rng.choice([-1, 1])  # nonzero
    y1[rng.integers(n)] = rng.choice([-1, 1])
    d1 = rng.uniform(0.1, 10)
    W = d1 * np.outer(x1, y1)
    X, d, Y = sdd(W, 1)
    assert sdd_error(W, X, d, Y) <= 1e-12 * np.linalg.norm(W)
    assert d[0] == pytest.approx(d1, rel=1e-12)
    sign = 1 if X[:, 0] @ x1 > 0 else -1  # (x, y) and (-x, -y) are the same term
    assert np.array_equal(X[:, 0], sign * x1) and np.array_equal(Y[:, 0], sign * y1)


def test_a_zero_residual_stops_with_zero_terms():
    X, d, Y = sdd(np.zeros((4, 3)), 3)
    assert np.all(X == 0) and np.all(Y == 0) and np.all(d == 0)
    W = 2.5 * np.outer([1, 0, -1, 1], [0, 1, 1])  # exact in floating point: the residual becomes exactly 0
    X, d, Y = sdd(W, 3)
    assert d[0] == 2.5 and np.all(d[1:] == 0) and np.all(X[:, 1:] == 0) and np.all(Y[:, 1:] == 0)
    assert sdd_error(W, X, d, Y) == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_gaussian_32x24_against_the_svd(seed):
    W = _gaussian(32, 24, seed=seed)
    norm = np.linalg.norm(W)
    singular = np.linalg.svd(W, compute_uv=False)
    X, d, Y = sdd(W, 48)
    relative = {k: sdd_error(W, X[:, :k], d[:k], Y[:, :k]) / norm for k in range(1, 49)}
    for k in range(1, 25):
        # A rank-k SDD is a rank <= k matrix, so it cannot beat the truncated SVD (Eckart-Young).
        svd_relative = np.sqrt(np.sum(singular[k:] ** 2)) / norm
        assert relative[k] >= svd_relative - 1e-12
    assert relative[24] < 0.6 * relative[4]
    # Threshold at rank 24. Each term removes at least the best ternary fit of the residual's largest column
    # (the MAX start's first half step). For Gaussian-like columns a ternary vector captures
    # max_t E[|g|; |g| > t]**2 / P(|g| > t) = 0.81 of the squared norm (half-normal |g|, t ~ 0.61), and the
    # largest of the 24 columns holds at least 1/24 of ||R||**2, so ||R_24||**2 / ||W||**2 is at most about
    # (1 - 0.81 / 24)**24 = 0.44, a relative error of about 0.66. The alternation and the largest column's excess
    # over the average do better (about 0.41 measured over seeds 0..19), so 0.66 leaves room for the heuristic.
    # It is a sanity bound: it catches a wrong scale or residual update, not a weaker local search (one-column
    # terms without the alternation measure about 0.43). The provable bound below allows 0.88.
    assert relative[24] < 0.66
    guarantee = 1.0 - 1.0 / (24 * np.sum(1.0 / np.arange(1, 33)))  # proven per-term decrease factor
    for k in (1, 4, 24, 48):
        assert relative[k] ** 2 <= guarantee ** k * (1 + 1e-9)
    assert relative[48] < relative[24]  # more terms than min(m, n) still help


@pytest.mark.parametrize("weights", [
    np.array([[1.0, np.nan], [0.0, 1.0]]),
    np.array([[1.0, np.inf]]),
    np.array([1.0, 2.0, 3.0]),
    np.ones((2, 2, 2)),
    np.zeros((0, 3)),
    np.array([[1 + 1j, 2.0]]),
    np.array([["a", "b"]]),
    np.array([[True, False]]),
    [[1.0, 2.0], [3.0]],
])
def test_bad_weights_raise(weights):
    with pytest.raises(HwnetError) as info:
        sdd(weights, 2)
    assert "\n" not in str(info.value) and str(info.value).startswith("sdd: weights")


@pytest.mark.parametrize("rank", [0, -1, True, False, 2.0, "2", None])
def test_bad_rank_raises(rank):
    with pytest.raises(HwnetError, match="rank must be a positive integer"):
        sdd(np.ones((3, 3)), rank)


def test_other_bad_arguments_raise():
    W = np.ones((3, 2))
    with pytest.raises(HwnetError, match="iterations"):
        sdd(W, 1, iterations=0)
    assert sdd(W, 1)[1][0] == pytest.approx(1.0)
    assert sdd(W, np.int64(1))[1].shape == (1,)
    for bad in ([], [[1.0]], [np.nan, 1.0]):
        with pytest.raises(HwnetError, match="best_ternary"):
            best_ternary(bad)
    X, d, Y = sdd(W, 2)
    with pytest.raises(HwnetError, match="shapes"):
        sdd_error(W, X, d[:1], Y)
    with pytest.raises(HwnetError, match="shapes"):
        sdd_error(W.T, X, d, Y)
