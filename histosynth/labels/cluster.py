"""Small, deterministic clustering pieces in numpy: k-means, k-center greedy, weighted Ward, ARI and purity.

scikit-learn is not a dependency of histosynth, and these are short: k-means++ with Lloyd iterations
(`n_init` seeded restarts, the lowest inertia wins), farthest-point (k-center greedy) selection for
diversity-aware sampling, and Ward agglomeration of weighted points (cluster centroids weighted by their sizes),
returned as a scipy linkage matrix so `scipy.cluster.hierarchy` tools (leaves_list, dendrogram) apply. With unit
weights the merges equal `scipy.cluster.hierarchy.linkage(points, "ward")` (tested).
"""

from __future__ import annotations

import numpy as np


def _sq_dists(x: np.ndarray, centers: np.ndarray, x_sq: np.ndarray | None = None) -> np.ndarray:
    """(n, k) squared Euclidean distances, clipped at 0 (the expansion can go slightly negative)."""
    if x_sq is None:
        x_sq = np.einsum("ij,ij->i", x, x)
    c_sq = np.einsum("ij,ij->i", centers, centers)
    d = x_sq[:, None] - 2.0 * (x @ centers.T) + c_sq[None, :]
    return np.maximum(d, 0.0, out=d)


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator, x_sq: np.ndarray) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007)."""
    n = len(x)
    chosen = [int(rng.integers(n))]
    closest = _sq_dists(x, x[chosen], x_sq)[:, 0]
    for _ in range(1, k):
        total = closest.sum()
        nxt = int(rng.choice(n, p=closest / total)) if total > 0 else int(rng.integers(n))
        chosen.append(nxt)
        np.minimum(closest, _sq_dists(x, x[[nxt]], x_sq)[:, 0], out=closest)
    return x[chosen].copy()


def kmeans(
    x: np.ndarray, k: int, seed: int = 0, n_init: int = 4, max_iter: int = 100
) -> tuple[np.ndarray, np.ndarray, float]:
    """Cluster rows of `x` into `k` groups: (centroids (k, d) float64, labels (n,), inertia).

    Deterministic for a given seed. Needs at least `k` distinct rows; a cluster that empties during the
    iterations is re-seeded with the point farthest from its center.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"kmeans: expected a non-empty (n, d) array, got shape {x.shape}")
    distinct = len(np.unique(x, axis=0))
    if not 1 <= k <= distinct:
        raise ValueError(f"kmeans: k={k} needs 1 <= k <= {distinct} (the number of distinct points)")
    x_sq = np.einsum("ij,ij->i", x, x)
    best: tuple[np.ndarray, np.ndarray, float] | None = None
    for run in range(n_init):
        rng = np.random.default_rng([seed, run])
        centers = _kmeans_pp(x, k, rng, x_sq)
        labels = np.full(len(x), -1)
        for _ in range(max_iter):
            d = _sq_dists(x, centers, x_sq)
            new = d.argmin(axis=1)
            counts = np.bincount(new, minlength=k)
            for empty in np.flatnonzero(counts == 0):  # re-seed with the worst-served point
                far = int(d[np.arange(len(x)), new].argmax())
                new[far] = empty
                d[far] = 0.0
                counts = np.bincount(new, minlength=k)
            if np.array_equal(new, labels):
                break
            labels = new
            sums = np.zeros_like(centers)
            np.add.at(sums, labels, x)
            centers = sums / counts[:, None]
        inertia = float(_sq_dists(x, centers, x_sq)[np.arange(len(x)), labels].sum())
        if best is None or inertia < best[2] - 1e-9 * max(abs(best[2]), 1.0):
            best = (centers, labels, inertia)
    assert best is not None
    return best


def assign(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid for each row of `x` (ties: the lowest index)."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) == 0:
        return np.zeros(0, dtype=np.int64)
    return _sq_dists(x, np.asarray(centroids, dtype=np.float64)).argmin(axis=1)


def kcenter_greedy(x: np.ndarray, m: int) -> np.ndarray:
    """Indices of up to `m` rows chosen by farthest-point traversal (a 2-approximate k-center cover).

    Starts from the row nearest the mean (deterministic), then repeatedly adds the row farthest from all
    chosen ones; stops early once every remaining row duplicates a chosen one. Keeps rare, outlying
    appearances that uniform sampling would miss: HTD's "diversity-aware sampling".
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if m <= 0 or n == 0:
        return np.zeros(0, dtype=np.int64)
    x_sq = np.einsum("ij,ij->i", x, x)
    first = int(_sq_dists(x, x.mean(axis=0, keepdims=True), x_sq)[:, 0].argmin())
    chosen = [first]
    closest = _sq_dists(x, x[[first]], x_sq)[:, 0]
    while len(chosen) < min(m, n):
        nxt = int(closest.argmax())
        if closest[nxt] <= 0.0:
            break
        chosen.append(nxt)
        np.minimum(closest, _sq_dists(x, x[[nxt]], x_sq)[:, 0], out=closest)
    return np.asarray(chosen, dtype=np.int64)


def ward_linkage(points: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Ward agglomeration of weighted points as a scipy linkage matrix Z ((n-1, 4): a, b, height, leaves).

    Merging clusters A and B costs w_A w_B / (w_A + w_B) * |c_A - c_B|^2 (the increase of the within-cluster
    sum of squares when each point stands for `weight` observations); heights are sqrt(2 * cost), as scipy's
    "ward" reports them. Ties go to the lowest (row, column) pair.
    """
    c = np.asarray(points, dtype=np.float64)
    n = len(c)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64).copy()
    if w.shape != (n,) or (w <= 0).any():
        raise ValueError("ward_linkage: weights must be positive, one per point")
    if n < 2:
        return np.zeros((0, 4))
    sq = _sq_dists(c, c)
    cost = (w[:, None] * w[None, :] / (w[:, None] + w[None, :])) * sq
    np.fill_diagonal(cost, np.inf)
    active = np.ones(n, dtype=bool)
    node = np.arange(n)  # scipy id of the cluster held in each slot
    leaves = np.ones(n)
    z = np.zeros((n - 1, 4))
    for step in range(n - 1):
        masked = np.where(active[:, None] & active[None, :], cost, np.inf)
        a, b = divmod(int(masked.argmin()), n)
        a, b = min(a, b), max(a, b)
        delta = cost[a, b]
        z[step] = (min(node[a], node[b]), max(node[a], node[b]), np.sqrt(2.0 * max(delta, 0.0)), leaves[a] + leaves[b])
        # Lance-Williams update for Ward: merged cluster stays in slot a.
        wa, wb = w[a], w[b]
        others = active.copy()
        others[[a, b]] = False
        wc = w[others]
        cost[a, others] = ((wa + wc) * cost[a, others] + (wb + wc) * cost[b, others] - wc * delta) / (wa + wb + wc)
        cost[others, a] = cost[a, others]
        w[a] = wa + wb
        leaves[a] += leaves[b]
        node[a] = n + step
        active[b] = False
        cost[b, :] = np.inf
        cost[:, b] = np.inf
    return z


def cut_linkage(z: np.ndarray, n: int, k: int) -> np.ndarray:
    """Cluster index (0..k-1, in order of each cluster's lowest leaf) of the `n` leaves when `z` is cut at `k`."""
    if not 1 <= k <= n:
        raise ValueError(f"cut_linkage: k must be within 1..{n}, got {k}")
    parent = list(range(2 * n - 1))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for step in range(n - k):
        a, b = int(z[step, 0]), int(z[step, 1])
        parent[root(a)] = n + step
        parent[root(b)] = n + step
    roots = [root(i) for i in range(n)]
    order: dict[int, int] = {}
    for r in roots:
        order.setdefault(r, len(order))
    return np.array([order[r] for r in roots], dtype=np.int64)


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index of two labelings (Hubert & Arabie 1985): 1 identical partitions, ~0 chance."""
    a = np.unique(np.asarray(a).ravel(), return_inverse=True)[1]
    b = np.unique(np.asarray(b).ravel(), return_inverse=True)[1]
    if a.size != b.size:
        raise ValueError(f"adjusted_rand_index: {a.size} vs {b.size} labels")
    n = a.size
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1)
    pairs = lambda v: v * (v - 1) / 2.0  # noqa: E731
    both = pairs(table).sum()
    rows, cols = pairs(table.sum(axis=1)).sum(), pairs(table.sum(axis=0)).sum()
    expected = rows * cols / pairs(n) if n > 1 else 0.0
    top = 0.5 * (rows + cols) - expected
    return 1.0 if top == 0 else float((both - expected) / top)


def purity(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of items whose predicted cluster's majority true class is their own class."""
    p = np.unique(np.asarray(predicted).ravel(), return_inverse=True)[1]
    t = np.unique(np.asarray(truth).ravel(), return_inverse=True)[1]
    table = np.zeros((p.max() + 1, t.max() + 1))
    np.add.at(table, (p, t), 1)
    return float(table.max(axis=1).sum() / max(p.size, 1))
