"""Semidiscrete decomposition (Kolda and O'Leary, 1998), the factorization of "Fixed-Point Factorized Networks".

"Fixed-Point Factorized Networks" (Wang and Cheng, CVPR 2017) replaces each weight matrix ``W`` (``m x n``) by
``X @ diag(d) @ Y.T``: ``X`` (``m x r``) and ``Y`` (``n x r``) hold only ``-1, 0, +1``, so multiplying by them
is additions and subtractions, and the ``r`` positive reals ``d`` are the only multiplications left. The
factors come from the semidiscrete decomposition of Kolda and O'Leary ("A semidiscrete matrix decomposition for
latent semantic indexing in information retrieval", ACM TOIS 16(4), 1998; O'Leary and Peleg, 1983), built
greedily one rank-one term ``d_k x_k y_k^T`` at a time on the residual ``R`` (at first ``W``):

1. Start ``y`` at the indicator (a single ``+1``) of the column of ``R`` with the largest norm, the lowest
   index on ties (Kolda and O'Leary's MAX start). No randomness is involved.
2. Alternate ``x = best_ternary(R @ y)`` and ``y = best_ternary(R.T @ x)`` (:func:`best_ternary`: the exact
   maximizer of ``(x . s)**2 / ||x||**2`` over ternary ``x``), up to ``iterations`` times, stopping early as
   soon as a round does not increase the objective ``f = (x . R y)**2 / (||x||**2 ||y||**2)``. Each half step
   maximizes ``f`` exactly with the other factor fixed, so ``f`` never decreases.
3. ``d_k = (x . R y) / (||x||**2 ||y||**2)``, the least-squares scale for these ``x, y`` (``x`` is negated if
   that makes ``d_k`` positive). Then ``||R - d_k x y^T||**2 = ||R||**2 - d_k**2 ||x||**2 ||y||**2``: every
   term lowers the residual by exactly ``f``.

With the MAX start the first half step alone already takes ``f >= ||R||**2 / (n H_m)`` (``H_m`` the ``m``-th
harmonic number; see :func:`best_ternary`), so ``||R_k||**2 <= (1 - 1 / (n H_m))**k ||W||**2``: the error of a
rank ``k`` SDD never increases with ``k`` and goes to zero, more slowly than the truncated SVD's, which is a
lower bound for it (a rank ``k`` SDD is a matrix of rank at most ``k``).
"""

import numpy as np

from ..errors import HwnetError

__all__ = ["sdd", "best_ternary", "sdd_error"]


def _best_ternary(s):
    """:func:`best_ternary` without the input checks; ``s`` a 1-D finite float64 array, non-empty."""
    magnitude = np.abs(s)
    order = np.argsort(-magnitude, kind="stable")  # descending |s|, lower index first on ties
    sums = np.cumsum(magnitude[order])
    objective = sums * sums / np.arange(1, len(s) + 1)
    support = int(np.argmax(objective)) + 1  # argmax takes the first maximum: the smallest J on ties
    x = np.zeros(len(s), dtype=np.int64)
    chosen = order[:support]
    x[chosen] = np.where(s[chosen] < 0, -1, 1)  # sign(0) -> +1 (only reached when it is needed for x != 0)
    return x


def best_ternary(s):
    """The ternary vector ``x`` in ``{-1, 0, 1}**len(s)``, ``x != 0``, maximizing ``(x . s)**2 / ||x||**2``.

    Equivalently ``x . s / sqrt(nnz(x))`` (the optimal ``x`` has ``x . s >= 0``). For a support of size ``J``
    the best choice is ``sign(s)`` on the ``J`` entries of largest ``|s|``, worth ``(sum of the J largest
    |s|)**2 / J``; all ``J = 1 .. len(s)`` are tried, in ``O(n log n)``. Ties in ``J`` go to the smallest
    ``J``; among entries of equal ``|s|`` the lower index is taken first. Zero entries of ``s`` are taken (with
    ``+1``) only when ``s`` is all zeros, where ``x`` is ``+1`` at index 0 alone. The optimum is at least
    ``||s||**2 / H_n`` (``H_n = 1 + 1/2 + ... + 1/n``): with ``M`` the optimum, the ``J``-th largest ``|s|`` is
    at most ``sqrt(M / J)``.

    Returns int64, of the length of ``s``. Raises :class:`HwnetError` unless ``s`` is a non-empty, finite,
    real 1-D array.
    """
    s = _real_array(s, "best_ternary: s", 1)
    return _best_ternary(s)


def sdd(weights, rank, *, iterations=10):
    """Semidiscrete decomposition ``weights ~ X @ diag(d) @ Y.T``, ``rank`` terms (see the module docstring).

    Parameters
    ----------
    weights : array_like, 2-D (m, n)
        Finite real values.
    rank : int
        The number of rank-one terms, ``>= 1``; may exceed ``min(m, n)`` (the SDD needs more terms than the SVD
        for the same error).
    iterations : int
        At most this many ``x``-then-``y`` rounds of the alternating search per term, ``>= 1``.

    Returns ``(X, d, Y)``: ``X`` int64 ``(m, rank)`` and ``Y`` int64 ``(n, rank)`` with entries in
    ``{-1, 0, 1}``, ``d`` float64 ``(rank,)``, each ``d_k > 0`` for a term that was found. When the residual is
    exactly zero (or so small that ``d_k`` underflows to 0) the decomposition stops: the remaining columns of
    ``X`` and ``Y`` are zero and their ``d`` is 0. The result is deterministic.

    Raises :class:`HwnetError` for weights that are not a finite real 2-D array with at least one entry, or a
    ``rank``/``iterations`` that is not a positive integer.
    """
    R = _real_array(weights, "sdd: weights", 2).copy()
    rank = _positive_int(rank, "sdd: rank")
    iterations = _positive_int(iterations, "sdd: iterations")
    m, n = R.shape
    X = np.zeros((m, rank), dtype=np.int64)
    Y = np.zeros((n, rank), dtype=np.int64)
    d = np.zeros(rank, dtype=np.float64)
    for k in range(rank):
        x, y = _rank_one_term(R, iterations)
        scale = float(x @ R @ y) / float((x @ x) * (y @ y))
        if scale < 0:  # pragma: no cover - best_ternary makes y . (R.T x) >= 0; kept so d > 0 holds regardless
            x, scale = -x, -scale
        if not scale > 0:  # R is zero (or d underflows): stop, the remaining terms stay zero
            break
        R -= scale * np.outer(x, y)
        X[:, k], Y[:, k], d[k] = x, y, scale
    return X, d, Y


def _rank_one_term(R, iterations):
    """The ternary ``(x, y)`` of the alternating search on the residual ``R`` (MAX start, early stop)."""
    y = np.zeros(R.shape[1], dtype=np.int64)
    y[int(np.argmax(np.einsum("ij,ij->j", R, R)))] = 1  # argmax: the lowest index on ties
    best_x, best_y, best_f = None, None, -1.0
    for _ in range(iterations):
        x = _best_ternary(R @ y)
        y = _best_ternary(R.T @ x)
        f = float(x @ R @ y) ** 2 / float((x @ x) * (y @ y))
        if f <= best_f:  # no improvement (equal, or lower only by rounding): keep the previous pair
            break
        best_x, best_y, best_f = x, y, f
    return best_x, best_y


def sdd_error(weights, X, d, Y):
    """The Frobenius norm ``||weights - X @ diag(d) @ Y.T||``, as a float.

    Raises :class:`HwnetError` unless ``weights`` is a finite real 2-D array and ``X`` (``m x r``), ``d``
    (``r``) and ``Y`` (``n x r``) have matching shapes.
    """
    W = _real_array(weights, "sdd_error: weights", 2)
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    d = np.asarray(d, dtype=np.float64)
    if X.ndim != 2 or Y.ndim != 2 or d.ndim != 1 or X.shape != (W.shape[0], len(d)) or Y.shape != (W.shape[1], len(d)):
        raise HwnetError(f"sdd_error: factor shapes X {X.shape}, d {d.shape}, Y {Y.shape} do not fit weights "
                         f"{W.shape}; expected X (m, r), d (r,), Y (n, r)")
    return float(np.linalg.norm(W - (X * d) @ Y.T))


def _real_array(values, what, ndim):
    """``values`` as a float64 array with ``ndim`` dimensions, non-empty and finite, or :class:`HwnetError`."""
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as exc:  # e.g. ragged nested lists
        raise HwnetError(f"{what} must be a {ndim}-D array of real numbers") from exc
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer)
                                   or np.issubdtype(array.dtype, np.floating)):
        raise HwnetError(f"{what} must be a {ndim}-D array of real numbers, got dtype {array.dtype}")
    if array.ndim != ndim:
        raise HwnetError(f"{what} must be {ndim}-D, got shape {array.shape}")
    if array.size == 0:
        raise HwnetError(f"{what} is empty (shape {array.shape})")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise HwnetError(f"{what} holds NaN or infinite entries")
    return array


def _positive_int(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise HwnetError(f"{what} must be a positive integer, got {value!r}")
    return int(value)
