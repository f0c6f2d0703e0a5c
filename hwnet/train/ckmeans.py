"""Optimal 1-D k-means (Wang and Song's Ckmeans.1d.dp dynamic programme, through the ``ckwrap`` package).

"No Multiplication? No Floating Point? No Problem!" clusters each layer's weights into a small codebook with
exactly this algorithm: the clustering of a sorted 1-D sample minimizing the within-cluster sum of squares is
found exactly by dynamic programming, not by Lloyd iterations from a random start.
"""

import numpy as np

from ..errors import HwnetError

__all__ = ["ckmeans"]


def ckmeans(values, k):
    """Cluster the 1-D ``values`` into ``k`` groups, optimally (least within-cluster sum of squares).

    Returns ``(centers, labels)``: ``centers`` float64 of length ``k``, ascending; ``labels`` int64 indices into
    ``centers``, one per value. With fewer than ``k`` distinct values, each distinct value is its own centre
    and the last centre is repeated to fill the codebook.
    """
    import ckwrap

    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise HwnetError("ckmeans: no values to cluster")
    if not np.all(np.isfinite(x)):
        raise HwnetError("ckmeans: the values hold NaN or infinite entries")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise HwnetError(f"ckmeans: k must be a positive integer, got {k!r}")
    distinct = np.unique(x)
    if len(distinct) <= k:
        centers = np.concatenate([distinct, np.full(k - len(distinct), distinct[-1])])
        return centers, np.searchsorted(distinct, x).astype(np.int64)
    result = ckwrap.ckmeans(x, int(k))
    centers = np.asarray(result.centers, dtype=np.float64)
    labels = np.asarray(result.labels, dtype=np.int64)
    if len(centers) != k:  # pragma: no cover - ckwrap returns exactly k clusters for > k distinct values
        raise HwnetError(f"ckmeans: asked for {k} clusters, got {len(centers)}")
    return centers, labels
