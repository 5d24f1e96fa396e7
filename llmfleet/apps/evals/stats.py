"""Distribution shift statistics: PSI for a scalar (bins from the reference window's quantiles) and the maximum
mean discrepancy with an RBF kernel for embeddings (bandwidth by the median heuristic on the reference), with a
permutation p-value."""
from __future__ import annotations

import numpy as np

PSI_EPSILON = 1e-4  # an empty bin counts as this share, so that the log stays finite


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index of `current` against `reference`: sum (c - r) * ln(c / r) over the reference's
    quantile bins. Rule of thumb: < 0.1 stable, 0.1-0.25 a shift, > 0.25 a large shift."""
    reference, current = np.asarray(reference, float), np.asarray(current, float)
    if len(reference) == 0 or len(current) == 0:
        raise ValueError("psi: both windows need values")
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref_share = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1)
    cur_share = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1)
    r = np.maximum(ref_share / len(reference), PSI_EPSILON)
    c = np.maximum(cur_share / len(current), PSI_EPSILON)
    return float(np.sum((c - r) * np.log(c / r)))


def psi_binary(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI of a 0/1 variable (a refusal): its two shares, the same formula."""
    r1 = min(max(float(np.mean(reference)), PSI_EPSILON), 1 - PSI_EPSILON)
    c1 = min(max(float(np.mean(current)), PSI_EPSILON), 1 - PSI_EPSILON)
    return float((c1 - r1) * np.log(c1 / r1) + (r1 - c1) * np.log((1 - c1) / (1 - r1)))


def median_gamma(reference: np.ndarray) -> float:
    """1 / median squared distance between reference points (the RBF kernel's width)."""
    x = np.asarray(reference, np.float64)
    d2 = _sq_dists(x, x)[np.triu_indices(len(x), 1)]
    median = float(np.median(d2)) if d2.size else 1.0
    return 1.0 / max(median, 1e-12)


def _sq_dists(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.maximum((x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T, 0.0)


def mmd2(x: np.ndarray, y: np.ndarray, gamma: float) -> float:
    """Unbiased squared MMD between samples x [n, d] and y [m, d] under k(a, b) = exp(-gamma |a - b|^2)."""
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError("mmd: both windows need at least 2 vectors")
    kxx, kyy, kxy = (np.exp(-gamma * _sq_dists(a, b)) for a, b in ((x, x), (y, y), (x, y)))
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2 * kxy.mean())


def mmd_test(x: np.ndarray, y: np.ndarray, permutations: int = 200, seed: int = 0,
             gamma: float | None = None) -> tuple[float, float]:
    """(MMD^2, p-value): the share of random splits of the pooled samples with an MMD^2 at least as large."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    gamma = gamma if gamma is not None else median_gamma(x)
    observed = mmd2(x, y, gamma)
    pooled, rng, n = np.concatenate([x, y]), np.random.default_rng(seed), len(x)
    kernel = np.exp(-gamma * _sq_dists(pooled, pooled))
    extreme = 0
    for _ in range(permutations):
        order = rng.permutation(len(pooled))
        extreme += _mmd2_from_kernel(kernel, order[:n], order[n:]) >= observed
    return observed, (extreme + 1) / (permutations + 1)


def _mmd2_from_kernel(kernel: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    kaa, kbb, kab = kernel[np.ix_(a, a)], kernel[np.ix_(b, b)], kernel[np.ix_(a, b)]
    n, m = len(a), len(b)
    return float((kaa.sum() - np.trace(kaa)) / (n * (n - 1)) + (kbb.sum() - np.trace(kbb)) / (m * (m - 1))
                 - 2 * kab.mean())
