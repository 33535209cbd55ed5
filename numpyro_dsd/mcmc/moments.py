"""The Stein moment test: the Stein identity for linear test functions (docs/math.md §2.10).

The diffusion Stein operator of docs/math.md §1.2 applied to :math:`f = e_k (x_k - c_k)` gives
:math:`\\mathcal A_{p,M} f = b_k (x_k - c_k) + M_{kk}`, so under the target, for any constant c,

.. math:: \\mathbb E_p\\big[-b_k(x)\\,(x_k - c_k)\\big] = \\mathbb E_p\\big[M_{kk}(x)\\big],

with :math:`b = M^\\top s_p + \\nabla\\cdot M` the effective score (for the identity diffusion:
:math:`\\mathbb E[-s_k (x_k - c_k)] = 1`; for a Gaussian target this is
:math:`\\mathrm{Var}\\, x_k / \\sigma_k^2 = 1`). The ratio

.. math:: r_k = \\frac{\\overline{-b_k (x_k - \\bar x_k)}}{\\overline{M_{kk}}}

is about 1 for draws of the target, about :math:`1.44` for a Gaussian chain whose spread is 20%
too wide and below 1 for one that is too narrow or stuck. These are the Stein discrepancies over
linear test functions, the moment-controlling part that the KSD with a translation-invariant
kernel lacks (Kanagawa et al. 2022): with about 50 effective draws the KSD wild-bootstrap test
rejects a 20% scale error in one run of ten, the test of :math:`r_k = 1` in most runs
(docs/benchmarks.md).

**The test.** For every coordinate k, and for the sum over coordinates when d > 1 (the trace,
most powerful when all scales are off together), :math:`r_k^{1/3}` is referred to a Student-t:

- :math:`\\bar x` is estimated from the same draws, which biases the numerator by
  :math:`\\mathrm{Cov}(\\bar b_k, \\bar x_k)`; this is subtracted, estimated as
  :math:`\\mathrm{corr}(b_k, x_k)\\,\\sqrt{\\mathrm{Var}\\,\\bar b_k\\,\\mathrm{Var}\\,\\bar x_k}`
  (exact when b is linear in x);
- the relative variance v of r comes from the linearised series
  :math:`u_t = a_t / \\bar a - m_t / \\bar m = (a_t - r\\, m_t) / (r\\, \\bar m)` (a the
  numerator terms, m the :math:`M_{kk}`) and its effective sample size (NumPyro's
  :func:`~numpyro.diagnostics.effective_sample_size`, per chain; chains are independent);
- :math:`z = (r^{1/3} - 1 + v/9) / (\\sqrt v / 3)` is referred to a t with
  :math:`\\mathrm{ESS}/2 - 1` degrees of freedom. Where :math:`r \\le 0`, r - 1 itself is
  tested against the same series' variance (a heavy-tailed series can have a negative mean by
  chance; a stuck chain has r = 0 and no variance, hence p = 0). The cube root (Wilson &
  Hilferty 1931) makes a ratio of mean squares nearly symmetric, :math:`v/9` is the bias of the
  cube root of a mean, and halving the degrees of freedom allows for the noise of the ESS
  estimate.

**One chain among several** (:func:`moment_tests`) is tested with the *pooled* spread: the variance
of u over the draws of every chain (u linearised about the pooled means), divided by the chain's
own ESS of u. A chain's own variance is tied to its statistic (a chain that stayed narrow also
looks light-tailed, so its own standard error is too small exactly when r is low): with it, 4 AR(1)
chains with rho = 0.9 were rejected 2.2 times too often at Holm's first per-chain threshold of the
verdict, 0.0025; with the pooled spread about 1.5 times (docs/math.md §2.10). Under :math:`H_0`
every chain has the same target, hence the same spread; but exact chains may mix at different
speeds, so each keeps its own ESS (with the chains' mean ESS the rate was 1.0 times, and an exact
chain with 10 effective draws among chains with 400 was called "fail").

The chain's ratio is centred where u is, at the pooled mean of x. Centred at its own mean, a chain
of a heavy-tailed target (Neal's funnel) carries a term :math:`\\bar x_{c,k}\\,\\bar b_{c,k}` that
the pooled spread lacks, and exact funnel chains were rejected 59 times too often at 0.0025 (0.8
times with the pooled centre). Any constant centre is valid under :math:`H_0`; the pooled one also
lets the test see a chain displaced from the others (its r exceeds 1 by about the squared
displacement over the variance).

The p-value is Bonferroni's over the tested quantities; the result names the one that set it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpyro.diagnostics import effective_sample_size
from scipy.stats import t as t_dist

from numpyro_dsd.flows.quality import pareto_khat

__all__ = ["MomentTest", "moment_test", "moment_tests", "KHAT_LIMIT"]

#: Pareto :math:`\hat k` of a ratio's series above which the ratio is not tested.
KHAT_LIMIT = 0.7


class MomentTest(NamedTuple):
    """The Stein moment test of a set of chains (:func:`moment_test`).

    Attributes
    ----------
    pvalue : float
        Bonferroni p-value over the tested ratios.
    ratio : float
        The ratio :math:`r` that set the p-value (1 for draws of the target).
    which : str
        Which ratio: ``"coordinate k"`` or ``"trace"`` (``"none"`` when none could be tested).
    untested : str
        The ratios left out because their series is too heavy-tailed for a t reference
        (Pareto :math:`\\hat k` above :data:`KHAT_LIMIT`), e.g. ``"coordinates 0, 2 and the
        trace"``; empty when all were tested.
    """

    pvalue: float
    ratio: float
    which: str
    untested: str = ""


def _ess(series: np.ndarray) -> np.ndarray:
    """ESS of one chain's series (n, k); a constant column gets 1 (its mean is all there is)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ess = np.asarray(effective_sample_size(series[None]), dtype=float)
    return np.clip(np.nan_to_num(ess, nan=1.0), 1.0, series.shape[0])


def _mean_cov(b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """:math:`\\mathrm{Cov}(\\bar b_k, \\bar x_k)` of one chain (n, d), from the lag-0
    correlation and the two means' variances."""
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.sum((b - b.mean(0)) * (x - x.mean(0)), 0) / np.sqrt(
            np.sum((b - b.mean(0)) ** 2, 0) * np.sum((x - x.mean(0)) ** 2, 0)
        )
    var_b, var_x = b.var(0, ddof=1) / _ess(b), x.var(0, ddof=1) / _ess(x)
    return np.nan_to_num(r) * np.sqrt(var_b * var_x)


def _with_trace(v: np.ndarray) -> np.ndarray:
    """Append the sum over the last axis (the trace) when there is more than one coordinate."""
    return v if v.shape[-1] == 1 else np.concatenate([v, v.sum(-1, keepdims=True)], -1)


class _Ratio(NamedTuple):
    """The ratio r of a set of chains, each chain's own r and each chain's linearised series."""

    ratio: np.ndarray  # (k,)
    chains: np.ndarray  # (C, k): each chain's r about the same centre
    series: list[np.ndarray]  # C x (n, k): (a - r m) / mean(m), whose mean's variance is r's


def _positive(m: np.ndarray) -> np.ndarray:
    return np.where(m > 0, m, 1.0)


def _ratio(x: np.ndarray, b: np.ndarray, m: np.ndarray) -> _Ratio:
    """r for chains (C, n, d), every chain centred at their pooled mean, less the centring bias
    :math:`\\mathrm{Cov}(\\bar b, \\bar x)` (for one chain's r: its share, 1/C of its own)."""
    centre, num_chains = x.reshape(-1, x.shape[-1]).mean(0), x.shape[0]
    a = [_with_trace(-bc * (xc - centre)) for bc, xc in zip(b, x, strict=True)]
    ms = [_with_trace(mc) for mc in m]
    bias = np.array([_with_trace(_mean_cov(bc, xc)) for bc, xc in zip(b, x, strict=True)])
    a_means, m_means = np.array([ac.mean(0) for ac in a]), np.array([mc.mean(0) for mc in ms])
    chains = (a_means - bias / num_chains) / _positive(m_means)
    safe_m = _positive(m_means.mean(0))
    ratio = (a_means.mean(0) - bias.sum(0) / num_chains**2) / safe_m
    return _Ratio(ratio, chains, [(ac - ratio * mc) / safe_m for ac, mc in zip(a, ms, strict=True)])


def _result(
    ratio: np.ndarray, var: np.ndarray, scale: np.ndarray, dof: np.ndarray, tested: np.ndarray
) -> MomentTest:
    """Bonferroni over two-sided t-tests of r = 1 (module docstring) for the ``tested`` ratios:
    of :math:`r^{1/3}` with the relative variance ``var / scale**2``, or of r itself where r or
    ``scale`` (the ratio the yardstick was taken at) is not positive, with the variance ``var``
    of r. p = 1 when nothing is tested."""
    untested = _names(~tested)
    if not np.any(tested):
        return MomentTest(1.0, float("nan"), "none", untested)
    cube = (ratio > 0) & (scale > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = var / np.where(cube, scale, 1.0) ** 2
        stat = np.where(cube, np.cbrt(np.where(cube, ratio, 1.0)) - 1 + v / 9, ratio - 1)
        sd = np.sqrt(np.where(cube, v / 9, var))
        z = np.where(sd > 0, np.abs(stat) / sd, np.where(stat == 0, 0.0, np.inf))
    p = np.where(tested, 2 * t_dist.sf(z, np.maximum(dof, 1.0)), np.inf)
    k = int(np.argmin(p))
    which = "trace" if k == ratio.size - 1 and ratio.size > 1 else f"coordinate {k}"
    return MomentTest(float(min(1.0, p[k] * np.sum(tested))), float(ratio[k]), which, untested)


def _names(mask: np.ndarray) -> str:
    """``"coordinates 0, 3 and the trace"`` for the flagged ratios (the trace is last when
    there is more than one coordinate)."""
    idx = [int(i) for i in np.flatnonzero(mask)]
    if not idx:
        return ""
    trace = mask.size > 1 and idx[-1] == mask.size - 1
    coords = idx[:-1] if trace else idx
    parts = [("coordinate " if len(coords) == 1 else "coordinates ") + ", ".join(map(str, coords))]
    parts = parts if coords else []
    return " and ".join(parts + (["the trace"] if trace else []))


def _heavy(series: np.ndarray) -> np.ndarray:
    """Ratios whose series (N, k), the second halves of the chains pooled (the tail is the
    target's: a kept burn-in's transient must not hide the test that sees it), has a Pareto
    :math:`\\hat k` of
    :math:`|u - \\mathrm{med}\\,u|` above :data:`KHAT_LIMIT`: its variance is infinite or
    nearly so, and a t reference for its mean is wrong (a finite, non-degenerate estimate only;
    a constant series is kept)."""
    khat = np.array([_tail_khat(col) for col in series.T])
    return np.isfinite(khat) & (khat > KHAT_LIMIT)


def _tail_khat(u: np.ndarray) -> float:
    dev = np.abs(u - np.median(u))
    if np.count_nonzero(dev > 0) < 20:  # degenerate (a stuck chain): nothing to estimate
        return float("nan")
    with np.errstate(divide="ignore"):
        return pareto_khat(np.log(dev))


def _checked(x: np.ndarray, b: np.ndarray, m_diag: np.ndarray | float) -> tuple[np.ndarray, ...]:
    x, b = np.asarray(x, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.ndim != 3 or x.shape != b.shape:
        raise ValueError(
            f"x and b must both have shape (chains, n, d); got {x.shape} and {b.shape}."
        )
    return x, b, np.broadcast_to(np.asarray(m_diag, dtype=np.float64), x.shape)


def moment_tests(
    x: np.ndarray, b: np.ndarray, m_diag: np.ndarray | float = 1.0
) -> tuple[list[MomentTest], MomentTest]:
    """Stein moment test of every chain (with the pooled spread) and of all chains together:
    :math:`H_0: r_k = 1` for every coordinate and the trace (module docstring).

    Parameters
    ----------
    x : (C, n, d)
        Draws in sampling order (latent points for a flow diffusion), C independent chains.
    b : (C, n, d)
        Effective scores :math:`M^\\top s_p + \\nabla\\cdot M` at them (the scores for the
        identity diffusion).
    m_diag : float, (d,) or (C, n, d)
        The diagonal of :math:`M` (1 for the identity).

    Returns
    -------
    (list of C MomentTest, MomentTest)
        Per chain, and for the pooled draws (the same as :func:`moment_test`).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(4, 500, 2))
    >>> x[2] *= 1.5  # one chain 50% too wide
    >>> chains, pooled = moment_tests(x, -x)
    >>> [res.pvalue < 1e-6 for res in chains], round(chains[2].ratio, 1)
    ([False, False, True, False], 2.2)
    """
    x, b, m = _checked(x, b, m_diag)
    pooled = _ratio(x, b, m)
    ess = np.array([_ess(u) for u in pooled.series])  # (C, k)
    var = sum(u.var(0, ddof=1) / e for u, e in zip(pooled.series, ess, strict=True))
    dof = ess.sum(0) / 2 - 1
    tested = ~_heavy(np.concatenate([u[u.shape[0] // 2 :] for u in pooled.series]))
    result = _result(pooled.ratio, var / x.shape[0] ** 2, pooled.ratio, dof, tested)
    if x.shape[0] == 1:
        return [result], result
    spread = np.concatenate(pooled.series).var(0, ddof=1)  # the target's, from every chain
    per_chain = [  # each chain's own memory: exact chains may mix at different speeds
        _result(r, spread / e, pooled.ratio, e / 2 - 1, tested)
        for r, e in zip(pooled.chains, ess, strict=True)
    ]
    return per_chain, result


def moment_test(x: np.ndarray, b: np.ndarray, m_diag: np.ndarray | float = 1.0) -> MomentTest:
    """Stein moment test of draws against the target, all chains together: :math:`H_0: r_k = 1`
    for every coordinate and the trace (module docstring; :func:`moment_tests` for each chain).

    Parameters
    ----------
    x, b, m_diag
        Draws (C, n, d), effective scores (C, n, d) and the diagonal of M, as in
        :func:`moment_tests`.

    Returns
    -------
    MomentTest

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(1, 1000, 2))
    >>> moment_test(x, -x).pvalue > 0.05  # exact draws of N(0, I)
    True
    >>> wide = 1.3 * x  # spread 30% too wide, scores of N(0, I)
    >>> res = moment_test(wide, -wide)
    >>> bool(res.pvalue < 1e-6), round(res.ratio, 1), res.which
    (True, 1.7, 'trace')
    """
    return moment_tests(x, b, m_diag)[1]
