"""One verdict per chain and for the pooled draws: "pass", "fail" or "inconclusive"
(docs/math.md §2.9).

Two tests feed it, each with a p-value under :math:`H_0`: *the draws are a stationary sample of
the target*:

- the KSD wild-bootstrap test, :math:`p_K` (:mod:`numpyro_dsd.mcmc.bootstrap`), which sees a
  wrong target (bias, missed mass, a wrong scale) but, with few effective draws, little else;
- the stationarity test, :math:`p_S` (:mod:`numpyro_dsd.mcmc.stationarity`), which sees drift,
  kept burn-in and chains that disagree, and is trusted only from the effective-size floor up.

They are combined by the weighted Bonferroni rule
:math:`p = \\min\\big(1,\\ p_K / w,\\ p_S / (1 - w)\\big)` with ``KSD_WEIGHT`` w (the
stationarity term is left out below the floor), valid at any dependence between them. For C
chains the C combined p-values are adjusted by Holm's step-down rule, so the chance that any
chain of a good run is called "fail" is at most the level :math:`\\alpha`. Then, with the
adjusted p:

- ``"fail"`` if :math:`p \\le \\alpha`;
- else ``"inconclusive"`` if the bulk ESS is below the floor (``min_ess`` per chain; the pooled
  draws need ``min_ess`` times the number of chains): too few effective draws to vouch for them;
- else ``"pass"``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from numpyro_dsd.mcmc.stationarity import Stationarity

__all__ = ["DEFAULT_ALPHA", "DEFAULT_MIN_ESS", "KSD_WEIGHT", "Verdict", "holm", "verdicts"]

#: The one level of every verdict, table and plot.
DEFAULT_ALPHA = 0.05
#: Bulk-ESS floor per chain below which a run cannot "pass".
DEFAULT_MIN_ESS = 100
#: Share w of the level spent on the KSD test; the stationarity test gets 1 - w.
KSD_WEIGHT = 0.8


class Verdict(NamedTuple):
    """A verdict, its reason and the p-value it rests on (after Holm's adjustment)."""

    verdict: str
    reason: str
    pvalue: float


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values: :math:`\\tilde p_{(i)} = \\max_{j \\le i}
    \\min(1, (C - j + 1) p_{(j)})` over the sorted p-values.

    Examples
    --------
    >>> holm(np.array([0.01, 0.04, 0.03]))
    array([0.03, 0.06, 0.06])
    """
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    scaled = np.minimum(1.0, (p.size - np.arange(p.size)) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def _combined(p_ksd: float, stat: Stationarity, floor: float) -> tuple[float, str]:
    """The weighted-Bonferroni p-value and the name of the test that set it."""
    p_k = p_ksd / KSD_WEIGHT
    if stat.ess < floor or stat.pvalue / (1 - KSD_WEIGHT) >= p_k:
        return min(1.0, p_k), "ksd"
    return min(1.0, stat.pvalue / (1 - KSD_WEIGHT)), "stationarity"


def _one(
    p: float, source: str, p_ksd: float, stat: Stationarity, floor: float, alpha: float
) -> Verdict:
    level = f"(adjusted p={p:.2g} {'<=' if p <= alpha else '>'} {alpha:g})"
    if p <= alpha and source == "ksd":
        return Verdict("fail", f"KSD test p={p_ksd:.2g} {level}", p)
    if p <= alpha:
        why = f"not stationary ({stat.source}): split-R\u0302 {stat.rhat:.3f} {level}"
        return Verdict("fail", why, p)
    if stat.ess < floor and stat.pvalue < 0.01:  # say what the untrusted test saw
        reason = (
            f"ESS {stat.ess:.0f} < {floor:.0f}; stationarity test p={stat.pvalue:.2g} (untrusted)"
        )
        return Verdict("inconclusive", reason, p)
    if stat.ess < floor:
        return Verdict("inconclusive", f"ESS {stat.ess:.0f} < {floor:.0f}", p)
    return Verdict("pass", f"KSD test p={p_ksd:.2g} {level}, split-R\u0302 {stat.rhat:.3f}", p)


def verdicts(
    p_ksd: np.ndarray,
    stats: list[Stationarity],
    p_ksd_pooled: float,
    stat_pooled: Stationarity,
    *,
    alpha: float = DEFAULT_ALPHA,
    min_ess: float = DEFAULT_MIN_ESS,
) -> tuple[list[Verdict], Verdict]:
    """Per-chain verdicts (Holm over the chains) and the pooled verdict (module docstring).

    Parameters
    ----------
    p_ksd : (C,)
        KSD test p-value of each chain.
    stats : list of C :class:`~numpyro_dsd.mcmc.stationarity.Stationarity`
        Each chain on its own (its two halves compared).
    p_ksd_pooled, stat_pooled
        The same for all chains together.
    alpha : float
        The level.
    min_ess : float
        Bulk-ESS floor per chain.

    Returns
    -------
    (list of Verdict, Verdict)

    Examples
    --------
    >>> good = Stationarity(rhat=1.002, ess=800.0, pvalue=0.6)
    >>> chains, pooled = verdicts(np.array([0.3, 0.001]), [good, good], 0.02, good)
    >>> [v.verdict for v in chains], pooled.verdict
    (['pass', 'fail'], 'fail')
    >>> few = Stationarity(rhat=1.3, ess=4.0, pvalue=1e-6)  # below the floor: not trusted
    >>> verdicts(np.array([0.4]), [few], 0.4, few)[1].reason
    'ESS 4 < 100; stationarity test p=1e-06 (untrusted)'
    >>> verdicts(np.array([0.4]), [few], 0.4, few._replace(pvalue=0.3))[1]
    Verdict(verdict='inconclusive', reason='ESS 4 < 100', pvalue=0.5)
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1); got {alpha}.")
    if min_ess < 0:
        raise ValueError(f"min_ess must be >= 0; got {min_ess}.")
    pieces = [_combined(float(p), s, min_ess) for p, s in zip(p_ksd, stats, strict=True)]
    adjusted = holm(np.array([p for p, _ in pieces]))
    chains = [
        _one(float(a), src, float(p), s, min_ess, alpha)
        for a, (_, src), p, s in zip(adjusted, pieces, p_ksd, stats, strict=True)
    ]
    floor = min_ess * len(stats)
    p, src = _combined(float(p_ksd_pooled), stat_pooled, floor)
    return chains, _one(p, src, float(p_ksd_pooled), stat_pooled, floor, alpha)
