"""One verdict per chain and for the pooled draws: "pass", "fail" or "inconclusive"
(docs/math.md §2.9).

Three tests feed it, each with a p-value under :math:`H_0`: *the draws are a stationary sample of
the target*:

- the KSD wild-bootstrap test, :math:`p_K` (:mod:`numpyro_dsd.mcmc.bootstrap`), which sees a
  wrong target (bias, missed mass, a wrong shape) but, with few effective draws, little of a
  wrong scale;
- the Stein moment test, :math:`p_M` (:mod:`numpyro_dsd.mcmc.moments`), which sees a wrong
  scale (a chain too wide, too narrow or stuck) with few effective draws;
- the stationarity test, :math:`p_S` (:mod:`numpyro_dsd.mcmc.stationarity`), which sees drift,
  kept burn-in and chains that disagree, and is trusted only from the effective-size floor up.

They are combined by the weighted Bonferroni rule
:math:`p = \\min\\big(1,\\ p_K / w_K,\\ p_M / w_M,\\ p_S / w_S\\big)` with the ``WEIGHTS``
(the stationarity term is left out below the floor), valid at any dependence between them. For
C chains the C combined p-values are adjusted by Holm's step-down rule, so the chance that any
chain of a good run is called "fail" is at most the level :math:`\\alpha`. Then, with the
adjusted p:

- ``"fail"`` if :math:`p \\le \\alpha`;
- else ``"inconclusive"`` if the bulk ESS is below the floor (``min_ess`` per chain; the pooled
  draws need ``min_ess`` times the number of chains): too few effective draws to vouch for them;
- else ``"pass"``, except that the pooled draws, which contain every chain, are
  ``"inconclusive"`` rather than ``"pass"`` while any chain is ``"fail"``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from numpyro_dsd._validation import real_number
from numpyro_dsd.mcmc.moments import MomentTest
from numpyro_dsd.mcmc.stationarity import Stationarity

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_MIN_ESS",
    "WEIGHTS",
    "Evidence",
    "check_level",
    "Verdict",
    "holm",
    "verdicts",
]

#: The one level of every verdict, table and plot.
DEFAULT_ALPHA = 0.05
#: Bulk-ESS floor per chain below which a run cannot "pass".
DEFAULT_MIN_ESS = 100
#: Share of the level spent on each test (they sum to 1): the KSD test, the Stein moment test,
#: the stationarity test (set by ``benchmarks/verdict_calibration.py``, docs/benchmarks.md).
WEIGHTS = {"ksd": 0.6, "moments": 0.2, "stationarity": 0.2}


class Evidence(NamedTuple):
    """What the verdict on one chain (or the pooled draws) rests on.

    Attributes
    ----------
    p_ksd : float
        KSD wild-bootstrap test p-value.
    stationarity : Stationarity
        R̂, bulk ESS and the stationarity test.
    moments : MomentTest, optional
        The Stein moment test (None: not run).
    """

    p_ksd: float
    stationarity: Stationarity
    moments: MomentTest | None = None


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


def _combined(ev: Evidence, floor: float) -> tuple[float, str]:
    """The weighted-Bonferroni p-value and the name of the test that set it."""
    scaled = {"ksd": ev.p_ksd / WEIGHTS["ksd"]}
    if ev.moments is not None:
        scaled["moments"] = ev.moments.pvalue / WEIGHTS["moments"]
    if ev.stationarity.ess >= floor:
        scaled["stationarity"] = ev.stationarity.pvalue / WEIGHTS["stationarity"]
    source = min(scaled, key=scaled.get)
    return min(1.0, scaled[source]), source


def _one(p: float, source: str, ev: Evidence, floor: float, alpha: float) -> Verdict:
    level = f"(adjusted p={p:.2g} {'<=' if p <= alpha else '>'} {alpha:g})"
    stat = ev.stationarity
    if p <= alpha and source == "ksd":
        return Verdict("fail", f"KSD test p={ev.p_ksd:.2g} {level}", p)
    if p <= alpha and source == "moments":
        m = ev.moments
        why = f"Stein moment test: spread ratio {m.ratio:.2f} ({m.which}) p={m.pvalue:.2g} {level}"
        return Verdict("fail", why, p)
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
    return Verdict("pass", f"KSD test p={ev.p_ksd:.2g} {level}, split-R\u0302 {stat.rhat:.3f}", p)


def check_level(alpha: object, min_ess: object) -> None:
    """Check the verdict's level ``alpha`` (in (0, 1)) and ESS floor ``min_ess`` (>= 0).

    Examples
    --------
    >>> check_level(0.05, 100)
    >>> check_level(5, 100)
    Traceback (most recent call last):
    ...
    ValueError: alpha must lie in (0, 1); got 5.
    """
    if not 0.0 < real_number(alpha, "alpha") < 1.0:
        raise ValueError(f"alpha must lie in (0, 1); got {alpha}.")
    if real_number(min_ess, "min_ess") < 0:
        raise ValueError(f"min_ess must be >= 0; got {min_ess}.")


def verdicts(
    chains: list[Evidence],
    pooled: Evidence,
    *,
    alpha: float = DEFAULT_ALPHA,
    min_ess: float = DEFAULT_MIN_ESS,
) -> tuple[list[Verdict], Verdict]:
    """Per-chain verdicts (Holm over the chains) and the pooled verdict (module docstring).

    Parameters
    ----------
    chains : list of C :class:`Evidence`
        Each chain on its own (its two halves compared).
    pooled : Evidence
        All chains together.
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
    >>> evidence = [Evidence(0.3, good), Evidence(0.001, good)]
    >>> chains, pooled = verdicts(evidence, Evidence(0.02, good))
    >>> [v.verdict for v in chains], pooled.verdict
    (['pass', 'fail'], 'fail')
    >>> verdicts(evidence, Evidence(0.3, good))[1].reason  # a failing chain: no pooled "pass"
    'chain 1 fail; pooled: KSD test p=0.3 (adjusted p=0.5 > 0.05), split-R̂ 1.002'
    >>> wide = MomentTest(pvalue=1e-4, ratio=1.44, which="coordinate 0")
    >>> verdicts([Evidence(0.4, good, wide)], Evidence(0.4, good, wide))[1].reason
    'Stein moment test: spread ratio 1.44 (coordinate 0) p=0.0001 (adjusted p=0.0005 <= 0.05)'
    >>> few = Stationarity(rhat=1.3, ess=4.0, pvalue=1e-6)  # below the floor: not trusted
    >>> verdicts([Evidence(0.4, few)], Evidence(0.4, few))[1].reason
    'ESS 4 < 100; stationarity test p=1e-06 (untrusted)'
    >>> verdicts([Evidence(0.6, few)], Evidence(0.6, few._replace(pvalue=0.3)))[1]
    Verdict(verdict='inconclusive', reason='ESS 4 < 100', pvalue=1.0)
    """
    check_level(alpha, min_ess)
    pieces = [_combined(ev, min_ess) for ev in chains]
    adjusted = holm(np.array([p for p, _ in pieces]))
    judged = [
        _one(float(a), src, ev, min_ess, alpha)
        for a, (_, src), ev in zip(adjusted, pieces, chains, strict=True)
    ]
    floor = min_ess * len(chains)
    p, src = _combined(pooled, floor)
    return judged, _vouched(_one(p, src, pooled, floor, alpha), judged)


def _vouched(pooled: Verdict, chains: list[Verdict]) -> Verdict:
    """The pooled draws contain every chain: they cannot "pass" while a chain fails."""
    failed = [str(c) for c, v in enumerate(chains) if v.verdict == "fail"]
    if pooled.verdict != "pass" or not failed:
        return pooled
    which = f"chain{'s' if len(failed) > 1 else ''} {', '.join(failed)}"
    return pooled._replace(verdict="inconclusive", reason=f"{which} fail; pooled: {pooled.reason}")
