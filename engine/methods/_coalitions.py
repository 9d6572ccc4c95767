"""On/off feature vectors ("coalitions") for LIME and Kernel SHAP.

Both methods score the model on images whose features are switched on or off (the numba
kernels of :mod:`onnxplain.kernels.lime` write them); they differ in which vectors are drawn
and how the samples are weighted. Helpers here:

- :func:`stratified_sizes`: how many coalitions of each size (number of features on) to
  draw for a target distribution over sizes, by largest remainders (stratified: the
  counts per size are fixed, not random, which removes the size-sampling noise);
- :func:`random_coalitions`: uniformly random subsets of given sizes, optionally paired
  with their complements (antithetic sampling: every subset and its complement are both
  scored, which cancels the even part of the estimation error);
- :func:`shapley_design`: Kernel SHAP's design (Lundberg & Lee 2017, shap's
  ``KernelExplainer``): subset-size strata enumerated completely while the budget allows,
  the rest sampled, each sample weighted so that every stratum carries its Shapley kernel
  mass ``(M - 1) / (s (M - s))``.
"""
from __future__ import annotations

import math

import numpy as np


def stratified_sizes(probabilities: np.ndarray, count: int) -> np.ndarray:
    """Integer counts (len(probabilities),) summing to ``count``, proportional to ``probabilities``."""
    p = np.asarray(probabilities, np.float64)
    p = p / p.sum()
    exact = p * count
    base = np.floor(exact).astype(np.int64)
    short = count - int(base.sum())
    if short > 0:
        order = np.argsort(-(exact - base), kind="stable")
        base[order[:short]] += 1
    return base


def random_coalitions(sizes: np.ndarray, num_features: int, rng: np.random.Generator, *,
                      paired: bool) -> np.ndarray:
    """uint8 (N, M) rows with ``sizes[i]`` ones each, uniformly random; with ``paired`` each row is
    followed by its complement (so N = 2 * len(sizes))."""
    sizes = np.asarray(sizes, np.int64)
    n = len(sizes)
    keys = rng.random((n, num_features))
    ranks = np.argsort(np.argsort(keys, axis=1), axis=1)
    rows = (ranks < sizes[:, None]).astype(np.uint8)
    if not paired:
        return rows
    out = np.empty((2 * n, num_features), np.uint8)
    out[0::2] = rows
    out[1::2] = 1 - rows
    return out


def shapley_kernel(num_features: int, size: np.ndarray) -> np.ndarray:
    """Shapley kernel weight of ONE coalition of each size: (M - 1) / (C(M, s) s (M - s))."""
    m = num_features
    s = np.asarray(size, np.int64)
    comb = np.array([math.comb(m, int(k)) for k in s.ravel()], np.float64).reshape(s.shape)
    return (m - 1) / (comb * s * (m - s))


def all_coalitions(num_features: int) -> np.ndarray:
    """Every coalition except the empty and the full one: uint8 (2^M - 2, M)."""
    codes = np.arange(1, 2 ** num_features - 1, dtype=np.int64)
    return ((codes[:, None] >> np.arange(num_features)[None, :]) & 1).astype(np.uint8)


def shapley_design(num_features: int, num_samples: int, rng: np.random.Generator, *,
                   paired: bool = True) -> tuple[np.ndarray, np.ndarray, bool]:
    """(coalitions uint8 (N, M), weights (N,), exact) for Kernel SHAP with a budget of ``num_samples``.

    When ``2^M - 2 <= num_samples`` every coalition is enumerated with its exact Shapley kernel
    weight (``exact`` True). Otherwise shap's scheme: sizes s and M - s form one stratum
    (mass ``2 (M - 1) / (s (M - s))``, once for s = M / 2); strata are enumerated completely
    from the smallest sizes while their coalitions fit the budget share their mass gives them;
    the remaining budget is spread over the remaining strata in proportion to their mass
    (stratified counts) with random subsets, each paired with its complement when
    ``paired``; every sampled coalition of a stratum carries an equal share of its mass.
    """
    m = num_features
    if m < 2:
        raise ValueError(f"Kernel SHAP needs at least 2 features; got {m}.")
    total = 2 ** m - 2 if m < 63 else None
    if total is not None and total <= num_samples:
        z = all_coalitions(m)
        return z, shapley_kernel(m, z.sum(axis=1)), True
    half = m // 2
    strata = list(range(1, half + 1))                       # s and M - s together
    mass = np.array([(m - 1) / (s * (m - s)) * (1 if 2 * s == m else 2) for s in strata], np.float64)
    mass /= mass.sum()
    rows: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    left = num_samples
    left_mass = 1.0
    k = 0
    while k < len(strata):
        s = strata[k]
        count = math.comb(m, s) * (1 if 2 * s == m else 2)
        if count > left * mass[k] / left_mass:
            break
        z = _all_of_size(m, s)
        if 2 * s != m:
            z = np.concatenate([z, 1 - z])
        rows.append(z)
        weights.append(np.full(len(z), mass[k] / len(z)))
        left -= len(z)
        left_mass -= mass[k]
        k += 1
    if k < len(strata) and left > 0:
        rest = mass[k:]
        units = left // 2 if paired else left
        per = stratified_sizes(rest, units)
        for j, (s, n) in enumerate(zip(strata[k:], per)):
            if n == 0:
                continue
            if paired:
                z = random_coalitions(np.full(n, s), m, rng, paired=True)
            else:  # each draw is size s or M - s with equal chance
                flip = rng.random(n) < 0.5
                z = random_coalitions(np.where(flip, m - s, s), m, rng, paired=False)
            rows.append(z)
            weights.append(np.full(len(z), rest[j] / len(z)))
        # strata that got no sample lose their mass: renormalise what was sampled
    z = np.concatenate(rows) if rows else np.zeros((0, m), np.uint8)
    w = np.concatenate(weights) if weights else np.zeros(0)
    return z, w, False


def _all_of_size(m: int, s: int) -> np.ndarray:
    from itertools import combinations

    idx = np.array(list(combinations(range(m), s)), np.int64)
    out = np.zeros((len(idx), m), np.uint8)
    out[np.arange(len(idx))[:, None], idx] = 1
    return out


def constrained_shapley(z: np.ndarray, weights: np.ndarray, values: np.ndarray, full: np.ndarray,
                        empty: np.ndarray) -> np.ndarray:
    """Shapley values (M, K) by weighted least squares with the efficiency constraint.

    ``values`` (N, K) are the scores of the coalitions ``z`` (N, M), ``full`` / ``empty`` (K,) the
    scores with every / no feature on. Solves ``min sum_n w_n (v_n - empty - z_n . phi)^2``
    subject to ``sum(phi) = full - empty`` by eliminating the last feature (shap's solver).
    """
    x = z.astype(np.float64)
    m = x.shape[1]
    delta = (np.asarray(full, np.float64) - np.asarray(empty, np.float64))        # (K,)
    y = np.asarray(values, np.float64) - np.asarray(empty, np.float64)[None]      # (N, K)
    y = y - x[:, -1:] * delta[None]
    a = x[:, :-1] - x[:, -1:]
    sw = np.sqrt(np.asarray(weights, np.float64))[:, None]
    coef, *_ = np.linalg.lstsq(a * sw, y * sw, rcond=None)                         # (M - 1, K)
    phi = np.empty((m, y.shape[1]))
    phi[:-1] = coef
    phi[-1] = delta - coef.sum(axis=0)
    return phi
