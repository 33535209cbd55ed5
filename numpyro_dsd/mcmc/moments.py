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
most powerful when all scales are off together), :math:`\\log r_k` is referred to a Student-t:

- :math:`\\bar x` is estimated from the same draws, which biases the numerator by
  :math:`\\mathrm{Cov}(\\bar b_k, \\bar x_k)`; this is subtracted, estimated as
  :math:`\\mathrm{corr}(b_k, x_k)\\,\\sqrt{\\mathrm{Var}\\,\\bar b_k\\,\\mathrm{Var}\\,\\bar x_k}`
  (exact when b is linear in x);
- the standard error comes from the linearised series
  :math:`u_t = a_t / \\bar a - m_t / \\bar m` (a the numerator terms, m the :math:`M_{kk}`) and its
  effective sample size (NumPyro's :func:`~numpyro.diagnostics.effective_sample_size`, per
  chain; chains are independent);
- :math:`\\log r_k + \\mathrm{se}^2/2` over se is referred to a t with :math:`\\mathrm{ESS}/2 - 1`
  degrees of freedom. The logarithm removes most of the skew of a mean of squares (the plain
  ratio rejects two to three times too often in the lower tail at 100 effective draws); halving
  the degrees of freedom allows for the noise of the ESS estimate.

The p-value is Bonferroni's over the tested quantities; the result names the one that set it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpyro.diagnostics import effective_sample_size
from scipy.stats import t as t_dist

__all__ = ["MomentTest", "moment_test"]


class MomentTest(NamedTuple):
    """The Stein moment test of a set of chains (:func:`moment_test`).

    Attributes
    ----------
    pvalue : float
        Bonferroni p-value over the tested ratios.
    ratio : float
        The ratio :math:`r` that set the p-value (1 for draws of the target).
    which : str
        Which ratio: ``"coordinate k"`` or ``"trace"``.
    """

    pvalue: float
    ratio: float
    which: str


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


def _pvalues(a: list, m: list, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided p-values and ratios for :math:`\\bar a - \\mathrm{bias} = \\bar m`, chains
    pooled."""
    num_chains = len(a)
    a_bar = np.mean([ac.mean(0) for ac in a], 0) - bias
    m_bar = np.mean([mc.mean(0) for mc in m], 0)
    ratio = a_bar / m_bar
    log_ok = (a_bar > 0) & (m_bar > 0)
    safe_a, safe_m = np.where(log_ok, a_bar, 1.0), np.where(m_bar != 0, m_bar, 1.0)
    var, ess = np.zeros_like(a_bar), np.zeros_like(a_bar)
    for ac, mc in zip(a, m, strict=True):
        # linearised series of log(a/m), or of a - m where the log is undefined
        u = np.where(log_ok, ac / safe_a - mc / safe_m, ac - mc)
        e = _ess(u)
        var += u.var(0, ddof=1) / e / num_chains**2
        ess += e
    stat = np.where(log_ok, np.log(np.where(log_ok, ratio, 1.0)) + var / 2, a_bar - m_bar)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(var > 0, np.abs(stat) / np.sqrt(var), np.where(stat == 0, 0.0, np.inf))
    return 2 * t_dist.sf(z, np.maximum(ess / 2 - 1, 1.0)), ratio


def moment_test(x: np.ndarray, b: np.ndarray, m_diag: np.ndarray | float = 1.0) -> MomentTest:
    """Stein moment test of draws against the target: :math:`H_0: r_k = 1` for every coordinate
    and the trace (module docstring).

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
    x, b = np.asarray(x, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.ndim != 3 or x.shape != b.shape:
        raise ValueError(
            f"x and b must both have shape (chains, n, d); got {x.shape} and {b.shape}."
        )
    m = np.broadcast_to(np.asarray(m_diag, dtype=np.float64), x.shape)
    centre = x.reshape(-1, x.shape[-1]).mean(0)
    a = [_with_trace(-bc * (xc - centre)) for bc, xc in zip(b, x, strict=True)]
    ms = [_with_trace(mc) for mc in m]
    bias = _with_trace(np.sum([_mean_cov(bc, xc) for bc, xc in zip(b, x, strict=True)], 0))
    p, ratio = _pvalues(a, ms, bias / x.shape[0] ** 2)
    k = int(np.argmin(p))
    which = "trace" if k == x.shape[-1] else f"coordinate {k}"
    return MomentTest(float(min(1.0, p[k] * p.size)), float(ratio[k]), which)
