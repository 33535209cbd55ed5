"""Rank-normalised split R-hat and ESS, and a calibrated test of stationarity (docs/math.md §2.9).

Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021): each coordinate of the draws
:math:`x^{(c)}_t` (chains c = 1..C, draws t = 1..n) is replaced by its normal score
:math:`z = \\Phi^{-1}((r - 3/8)/(Cn + 1/4))`, r its rank among all Cn draws, and every chain is
split into halves, giving m = 2C sequences of N = n // 2 draws. Then

- the **bulk ESS** is NumPyro's multi-chain :func:`~numpyro.diagnostics.effective_sample_size`
  of the m halves of z;
- the **split-R̂** is the larger of NumPyro's :func:`~numpyro.diagnostics.gelman_rubin` of the
  halves of z and of the *folded* draws :math:`|x - \\mathrm{median}\\, x|` (rank-normalised
  the same way), so location and scale differences between halves both show.

R̂ has no level: a stationary run's R̂ exceeds 1.01 often when the ESS is a few hundred. So the
verdict uses a **test** built from the same pieces. With :math:`\\bar z_j` the half means,
:math:`s^2` their sample variance, W the mean within-half variance and :math:`\\hat e` the
within-half ESS (the ESS of the halves after each is centred at its own mean, divided by m),
a stationary run has :math:`\\mathrm{Var}\\,\\bar z_j \\approx W / \\hat e`, hence

.. math::
    T = (m - 1)\\,\\hat e\\, s^2 / W
      = (m - 1)\\,\\hat e\\,\\big(\\hat R^2 - (N - 1)/N\\big) \\;\\approx\\; \\chi^2_{m-1},

one statistic per coordinate and per fold (the within variance being estimated too, T/(m - 1) is
referred to an F distribution with :math:`m(\\hat e - 1)` denominator degrees of freedom). A chain
that drifts has halves whose means differ by many standard errors.

Ranks forget how far out a point is, and a short transient (a kept burn-in that started far away)
shifts a half only a little in rank. So a second family is Geweke's (1992) comparison of the start
of each chain with its end: with A the first 1% (at least 10 draws) or the first 10% of a chain and
B its last 50%, for a series y,

.. math::
    Z = \\frac{\\bar y_A - \\bar y_B}{\\sqrt{s_B^2\\, \\tau_B\\,(1/|A| + 1/|B|)}},

:math:`s_B^2` and :math:`\\tau_B = |B| / \\mathrm{ESS}_B` taken from the end alone, so the
transient cannot inflate its own yardstick (for a stationary chain Z is about Student-t with
:math:`|A| / \\max(\\tau_B, \\tau_z) - 1` degrees of freedom, :math:`\\tau_z` that of the chain's
normal scores: a spread of a slow chain decorrelates faster than the chain, but its window means
move in blocks of the chain's memory). Two series: the normal scores z (locations) and
:math:`\\log(1 + ((x - m_B)/s_B)^2)`, with :math:`m_B` the median and :math:`s_B` 1.4826 times the
median absolute deviation of B (spreads): the logarithm tames heavy tails, which make raw means and
squares useless as yardsticks (an exact NUTS run on Neal's funnel failed at p = 1e-20 with them),
yet a point 10 sd out still counts 4.6 against about 0.5. That series is skewed, and the mean of a
long window of it inherits the skew: in the 10% window its upper tail was five times heavier than
the t's at the per-chain thresholds of the verdict (docs/math.md §2.9). So the 10% window compares
spreads by the normal scores of the folded draws :math:`|x - m_B|`, whose window means are
symmetric; far points are the 1% window's business. The chains' signed normal scores are summed
(Stouffer), so chains that share a transient add up. The p-value of the whole test is Bonferroni's
over every statistic of both families."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpyro.diagnostics import effective_sample_size, gelman_rubin
from scipy.special import ndtr, ndtri
from scipy.stats import f as f_dist
from scipy.stats import rankdata
from scipy.stats import t as t_dist

__all__ = [
    "MIN_DRAWS",
    "Stationarity",
    "rank_normalise",
    "split_halves",
    "bulk_ess",
    "within_ess",
    "stationarity",
]

#: The fewest draws per chain the split-half statistics and the autocorrelation times take.
MIN_DRAWS = 8


class Stationarity(NamedTuple):
    """Rank-normalised split diagnostics of a set of chains (:func:`stationarity`).

    Attributes
    ----------
    rhat : float
        Largest split-R̂ over the coordinates (bulk and folded).
    ess : float
        Smallest bulk ESS over the coordinates.
    pvalue : float
        Bonferroni p-value of the stationarity test (module docstring).
    source : str
        Which family gave the smallest p-value: ``"split halves"`` or ``"start vs end"``.
    """

    rhat: float
    ess: float
    pvalue: float
    source: str = "split halves"


def rank_normalise(x: np.ndarray) -> np.ndarray:
    """Normal scores :math:`\\Phi^{-1}((r - 3/8)/(S + 1/4))` of draws (C, n, k), ranks r over all
    S = Cn draws of each coordinate (average ranks for ties).

    Examples
    --------
    >>> z = rank_normalise(np.arange(6.0).reshape(1, 6, 1) ** 3)
    >>> bool(np.allclose(z[0, :, 0], -z[0, ::-1, 0]))  # symmetric whatever the spacing
    True
    """
    c, n, k = x.shape
    r = rankdata(x.reshape(c * n, k), axis=0)
    return ndtri((r - 0.375) / (c * n + 0.25)).reshape(c, n, k)


def split_halves(x: np.ndarray) -> np.ndarray:
    """Chains (C, n, k) as 2C half-chains (2C, n // 2, k); the middle draw of an odd n is dropped.

    Examples
    --------
    >>> split_halves(np.arange(5.0).reshape(1, 5, 1))[:, :, 0]
    array([[0., 1.],
           [3., 4.]])
    """
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, x.shape[1] - half :]], axis=0)


def bulk_ess(x: np.ndarray) -> np.ndarray:
    """Rank-normalised split bulk ESS of each coordinate of draws (C, n, k), shape (k,).

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(size=(4, 500, 2))
    >>> bool(np.all(bulk_ess(x) > 1500))  # 2000 independent draws
    True
    """
    return effective_sample_size(split_halves(rank_normalise(x)))


def within_ess(x: np.ndarray) -> np.ndarray:
    """Rank-normalised split ESS of draws (C, n, k) with each half centred at its own mean, (k,).

    What is left is the autocorrelation *within* the halves: a trend or a shift between the
    halves, which :func:`bulk_ess` counts against the ESS, does not shrink it. This is the
    memory the wild bootstrap's sign process must reproduce
    (:func:`numpyro_dsd.mcmc.bootstrap.flip_probability`).

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(size=(1, 1000, 1))
    >>> drift = x + np.linspace(0.0, 1.0, 1000)[None, :, None]
    >>> bool(bulk_ess(drift)[0] < 300 < within_ess(drift)[0])
    True
    """
    return _centred_ess(split_halves(rank_normalise(np.asarray(x, dtype=np.float64))))


def _centred_ess(halves: np.ndarray) -> np.ndarray:
    """Multi-chain ESS of sequences (m, N, k) each centred at its own mean, (k,)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return effective_sample_size(halves - halves.mean(axis=1, keepdims=True))


def _folded(x: np.ndarray) -> np.ndarray:
    return np.abs(x - np.median(x.reshape(-1, x.shape[-1]), axis=0))


def _start_vs_end(x: np.ndarray) -> np.ndarray:
    """Two-sided p-values of Geweke's start-versus-end comparisons (module docstring), one per
    coordinate, window and family (locations of the normal scores; spreads on a log scale in the
    1% window, as normal scores of the folded draws in the 10% window), the chains' signed
    z-scores combined by Stouffer's sum (chains that share a transient add up); empty for chains
    under 20 draws."""
    n = x.shape[1]
    if n < 20:
        return np.zeros(0)
    end = x[:, n // 2 :]
    centre = np.median(end, axis=1, keepdims=True)
    scale = 1.4826 * np.median(np.abs(end - centre), axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        spread = np.log1p(((x - centre) / scale) ** 2)  # heavy tails tamed, far points not
    ranks, folded = rank_normalise(x), rank_normalise(np.abs(x - centre))
    starts = sorted({max(10, n // 100), n // 10})  # a short transient hides in a long window
    spreads = [spread if m == starts[0] else folded for m in starts]  # far points: short window
    pairs = [(ranks, m) for m in starts] + list(zip(spreads, starts, strict=True))
    slow = _tau(ranks[:, n // 2 :])  # the memory of the chain itself
    z = np.concatenate([_geweke(y, m, slow) for y, m in pairs], axis=-1)
    return 2 * ndtr(-np.abs(z.sum(axis=0) / np.sqrt(x.shape[0])))


def _tau(y: np.ndarray) -> np.ndarray:
    """Integrated autocorrelation time n / ESS of each chain and coordinate of y (C, n, k)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(np.maximum(1.0, y.shape[1] / _chain_ess(y)), nan=1.0)


def _geweke(y: np.ndarray, start: int, slow: np.ndarray) -> np.ndarray:
    """Normal scores of Geweke's Z of each chain and coordinate of y (C, n, k), (C, k): the mean
    of the first ``start`` draws against the last 50%, with variance and autocorrelation from the
    end only; the degrees of freedom count the windows of the slower of y's and the chain's own
    memory ``slow`` (C, k) in the first ``start`` draws."""
    n = y.shape[1]
    a, b = y[:, :start], y[:, n // 2 :]
    tau = _tau(b)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = b.var(axis=1, ddof=1) * tau * (1 / a.shape[1] + 1 / b.shape[1])
        z = np.nan_to_num((a.mean(axis=1) - b.mean(axis=1)) / np.sqrt(var), nan=0.0)
    return _normal_score(t_dist(np.maximum(1.0, a.shape[1] / np.maximum(tau, slow) - 1.0)), z)


def _normal_score(law: Any, value: np.ndarray) -> np.ndarray:
    """The standard normal quantile of ``law.cdf(value)``, from whichever tail is accurate."""
    upper = -ndtri(law.sf(value))
    return np.clip(np.where(upper > 0, upper, ndtri(law.cdf(value))), -30.0, 30.0)


def _chain_ess(y: np.ndarray) -> np.ndarray:
    """Single-chain ESS of each chain of y (C, n, k), shape (C, k)."""
    return np.stack([effective_sample_size(chain[None]) for chain in y])


def stationarity(x: np.ndarray) -> Stationarity:
    """Split-R̂, bulk ESS and the stationarity test of draws (C, n, d), C >= 1, n >= 8.

    Parameters
    ----------
    x : (C, n, d)
        Draws of C chains in sampling order (one chain: its two halves are compared).

    Returns
    -------
    Stationarity
        ``rhat`` (max over coordinates, bulk and folded), ``ess`` (min bulk ESS) and ``pvalue``
        (Bonferroni over the split-half and start-versus-end statistics, module docstring).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> good = rng.normal(size=(4, 500, 3))
    >>> bool(stationarity(good).pvalue > 0.05)
    True
    >>> drift = good + np.linspace(0.0, 2.0, 500)[None, :, None]  # a trend along every chain
    >>> res = stationarity(drift)
    >>> bool(res.pvalue < 1e-6), bool(res.rhat > 1.1)
    (True, True)
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[1] < MIN_DRAWS:
        raise ValueError(
            f"stationarity needs draws (chains, n >= {MIN_DRAWS}, d); got shape {x.shape}."
        )
    z = np.concatenate([rank_normalise(x), rank_normalise(_folded(x))], axis=-1)
    halves = split_halves(z)
    m, big_n = halves.shape[:2]
    constant = np.all(np.ptp(x.reshape(-1, x.shape[-1]), axis=0) == 0)  # nothing to rank
    with np.errstate(invalid="ignore", divide="ignore"):
        rhat = gelman_rubin(halves)
        ess = effective_sample_size(halves[..., : x.shape[-1]])
        e_half = _centred_ess(halves) / m
        e_half = np.minimum(e_half, big_n)  # antithetic chains: no credit beyond independence
        t = (m - 1) * e_half * (rhat**2 - (big_n - 1) / big_n)
    dof = np.maximum(m * (e_half - 1.0), 1.0)  # the within variance is estimated too
    p_each = f_dist.sf(np.nan_to_num(t, nan=0.0) / (m - 1), m - 1, np.nan_to_num(dof, nan=1.0))
    p_start = _start_vs_end(x)
    p_all = np.concatenate([p_each.ravel(), p_start])
    pvalue = 1.0 if constant else float(min(1.0, p_all.size * p_all.min()))
    source = "start vs end" if p_start.size and p_start.min() < p_each.min() else "split halves"
    ess = ess[np.isfinite(ess)]  # a constant coordinate has no ESS
    rhat_max = float(np.nanmax(rhat, initial=1.0))
    return Stationarity(rhat_max, float(ess.min() if ess.size else 0.0), pvalue, source)
