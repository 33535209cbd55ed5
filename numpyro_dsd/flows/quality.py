"""How good a fitted flow is (docs/diagnostic.md, "The flow diffusion"): the health of its loss
curve, checked at fit time, and the Pareto :math:`\\hat k` of the flow as an importance proposal
for the posterior.

- :func:`loss_problem`: a fit whose losses went non-finite or ended higher than they started
  has diverged; :func:`numpyro_dsd.fit_flow` then backs off its step size and, failing that,
  raises :class:`FlowFitError`, never a flow that quietly is the untrained one.
- :func:`flow_khat`: PSIS (Vehtari et al. 2024) of the weights
  :math:`w = p(x)/q(x)`, :math:`x = G(\\varepsilon) \\sim q`. :math:`\\hat k < 0.5`: the flow
  covers the posterior well; :math:`\\hat k > 0.7`: its tails are too light for importance
  sampling, and its diffusion is a rougher preconditioner (the KSD stays a valid test with any
  invertible flow, docs/math.md §3).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "FlowFitError",
    "FlowQualityWarning",
    "loss_problem",
    "pareto_khat",
    "flow_khat",
    "KHAT_WARN",
]

#: :math:`\hat k` above which a fit warns (Vehtari et al.'s threshold for unreliable weights).
KHAT_WARN = 0.7


class FlowQualityWarning(UserWarning):
    """A fitted flow with :math:`\\hat k > 0.7`: usable, but a rough preconditioner."""


class FlowFitError(ValueError):
    """A flow fit that diverged: its losses went non-finite or ended above where they started.

    ``fit`` is the :class:`~numpyro_dsd.flows.FlowFit` as it ended (None when the fit could not
    start), to inspect its ``losses``.
    """

    def __init__(self, message: str, fit: Any = None):
        super().__init__(message)
        self.fit = fit


def loss_problem(losses: np.ndarray, max_nonfinite: float = 0.1) -> str | None:
    """What is wrong with a loss curve, or None when it is healthy.

    Unhealthy: a non-finite first loss (the objective is not finite where the fit starts), more
    than ``max_nonfinite`` of the losses non-finite (steps with non-finite values are skipped,
    so a few are harmless), or, for runs of 20 steps or more, the median of the last tenth above
    the median of the first tenth by more than :math:`5\\,\\mathrm{sd} + 1`, sd the noise of one
    loss from the MAD of the step-to-step differences over the first quarter, or above the
    smallest loss by more than 100 times its magnitude plus 1 (a blow-up from the first steps,
    whose noise swamps the first test), or above the median of the first 10 losses (where the
    fit started) by more than :math:`5\\,\\mathrm{sd}_0 + 1`, with :math:`\\mathrm{sd}_0`
    the same noise over the first 20 losses (a fit that ends worse than its start: one that rose
    within its first tenth, peaked and came partly back, whose first tenth is already high and
    noisy; SVGD's flow fit on a 50-d rotated Gaussian went 37, 948, 4064, 651): diverged.

    Examples
    --------
    >>> loss_problem(np.linspace(10.0, 1.0, 100)) is None
    True
    >>> loss_problem(np.r_[np.linspace(10.0, 1.0, 50), np.full(50, 50.0)])
    'the loss rose from 9.17 to 50 (median of the first and last tenth of the steps)'
    >>> loss_problem(np.r_[np.linspace(10.0, 1.0, 50), np.full(50, 1e9)])
    "the loss blew up from 1 (its smallest) to 1e+09 (last tenth's median)"
    >>> up_down = np.r_[np.full(30, 40.0), np.linspace(40, 4000, 70), np.linspace(4000, 650, 900)]
    >>> loss_problem(up_down + np.random.default_rng(0).normal(scale=3.0, size=1000))
    "the loss ended at 832 (last tenth's median), above where the fit started (40.3)"
    """
    losses = np.asarray(losses, dtype=np.float64)
    finite = np.isfinite(losses)
    if losses.size == 0:
        return None
    if not finite[0]:
        return "the loss is not finite at the start"
    if np.mean(~finite) > max_nonfinite:
        return f"{np.sum(~finite)} of {losses.size} losses are not finite"
    tenth = max(1, losses.size // 10)
    first, last = losses[:tenth][finite[:tenth]], losses[-tenth:][finite[-tenth:]]
    if last.size == 0:
        return "the last losses are not finite"
    if losses.size < 20:  # too short to tell a rise from noise
        return None
    sd = _noise(losses[: max(3, losses.size // 4)])  # the noise at the start
    start, end = np.median(first), np.median(last)
    low = np.min(losses[finite])
    exploded = end - low > 100.0 * (abs(low) + 1.0)  # a blow-up from the first steps on
    if exploded:
        return f"the loss blew up from {low:.3g} (its smallest) to {end:.3g} (last tenth's median)"
    if end > start + 5.0 * sd + 1.0:
        return (
            f"the loss rose from {start:.3g} to {end:.3g} (median of the first and last tenth of "
            "the steps)"
        )
    origin = np.median(losses[:10][finite[:10]])
    if end > origin + 5.0 * _noise(losses[:20]) + 1.0:
        return (
            f"the loss ended at {end:.3g} (last tenth's median), above where the fit started "
            f"({origin:.3g})"
        )
    return None


def _noise(losses: np.ndarray) -> float:
    """The noise of one loss: the MAD of the step-to-step differences of the finite ones."""
    steps = np.diff(losses[np.isfinite(losses)])
    return float(1.4826 * np.median(np.abs(steps - np.median(steps))) / np.sqrt(2.0))


def pareto_khat(log_weights: np.ndarray) -> float:
    """Pareto :math:`\\hat k` of importance log-weights, by ArviZ's PSIS (``arviz.psislw`` in
    ArviZ 0.x, ``arviz_stats`` in 1.x). Non-finite log-weights count as zero weights.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> bool(pareto_khat(rng.normal(scale=0.1, size=2000)) < 0.5)  # nearly equal weights
    True
    """
    lw = np.asarray(log_weights, dtype=np.float64).ravel()
    lw = np.where(np.isfinite(lw), lw, -np.inf)
    if not np.any(np.isfinite(lw)):
        return float("inf")
    lw = np.where(np.isfinite(lw), lw, np.min(lw[np.isfinite(lw)]) - 50.0)
    try:
        from arviz_stats.base import array_stats
    except ImportError:  # ArviZ 0.x
        import arviz as az

        return float(az.psislw(lw, 1.0)[1])
    return float(array_stats.psislw(-lw, r_eff=1.0)[1])  # it takes log-likelihoods: w = -ary


def flow_khat(
    generator: Any,
    log_prob: Callable[[jax.Array], jax.Array],
    dim: int,
    *,
    num_draws: int = 1000,
    rng_key: jax.Array | None = None,
) -> float:
    """:math:`\\hat k` of a flow :math:`q` as an importance proposal for :math:`p`.

    .. math::
        \\log w_s = \\log p(G(\\varepsilon_s))
        - \\big[\\log\\mathcal N(\\varepsilon_s; 0, I) - \\log|\\det J_G(\\varepsilon_s)|\\big],
        \\quad \\varepsilon_s \\sim \\mathcal N(0, I),\\ s = 1..S,

    then :func:`pareto_khat` of the :math:`\\log w_s` (``log_prob`` may be unnormalised).

    Parameters
    ----------
    generator : numpyro Transform
        :math:`G`, latent to data (``FittedFlow.generator()``).
    log_prob : callable
        :math:`\\log p` of a flat vector (d,).
    dim : int
        d.
    num_draws : int
        S.
    rng_key : jax.random key, optional
        None means ``jax.random.key(0)``.

    Examples
    --------
    >>> from numpyro.distributions.transforms import AffineTransform
    >>> log_p = lambda x: -0.5 * jnp.sum(x**2)  # p = N(0, I)
    >>> flow_khat(AffineTransform(jnp.zeros(2), 2.0), log_p, 2) < 0.5  # q = N(0, 4 I): covers p
    True
    >>> flow_khat(AffineTransform(jnp.zeros(2), 0.5), log_p, 2) > 0.7  # q = N(0, I / 4): too narrow
    True
    """
    key = jax.random.key(0) if rng_key is None else rng_key

    @jax.jit  # one compiled pass: op by op, the flow's layers cost seconds
    def log_weights(eps: jax.Array) -> jax.Array:
        x = generator(eps)
        log_det = jnp.asarray(generator.log_abs_det_jacobian(eps, x))
        if log_det.ndim == 2:  # an elementwise transform: one term per coordinate
            log_det = log_det.sum(-1)
        log_q = -0.5 * jnp.sum(eps**2, -1) - 0.5 * dim * jnp.log(2 * jnp.pi) - log_det
        return jax.vmap(log_prob)(x) - log_q

    return pareto_khat(np.asarray(log_weights(jax.random.normal(key, (num_draws, dim)))))
