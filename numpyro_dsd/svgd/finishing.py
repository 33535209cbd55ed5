"""The finish of noisy SVGD: deterministic steps towards the Stein moment equations.

Noisy SVGD's particles are as good as independent draws of the target, each mean off by about
:math:`\\sigma/\\sqrt n`. :func:`finish` moves them, with the linear kernels of
:func:`~numpyro_dsd.svgd.core.moment_force`, to particles that satisfy the Stein moment equations
:math:`\\frac1n\\sum_i s_i = 0` and :math:`\\frac1n\\sum_i s_i(z_i - \\bar z)^\\top = -I` (all of
them, or each coordinate's alone); :func:`gaussian_tails` picks, from the particles, the
coordinates in which the whole-covariance equations are worth fitting (docs/math.md §6.7,
docs/svgd.md "The default: noisy, then a finish").
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from numpyro_dsd.svgd.core import (
    LogProb,
    SVGDInfo,
    SVGDState,
    as_optax,
    guarded_step,
    latent_scores,
    moment_force,
)
from numpyro_dsd.svgd.preconditioners import Preconditioner

__all__ = ["FINISH_KERNELS", "finish", "gaussian_tails"]

#: The finish's kernels (:func:`finish`): "auto", the linear kernel on the coordinates whose tails
#: look Gaussian (:func:`gaussian_tails`) and the diagonal one on the rest; "full", the linear
#: kernel on all coordinates; "diagonal", the diagonal linear kernel alone.
FINISH_KERNELS = ("auto", "full", "diagonal")
#: :func:`gaussian_tails` flags a coordinate at this many standard errors of excess kurtosis.
TAIL_SES = 3.0


def gaussian_tails(particles: ArrayLike) -> jax.Array:
    """The coordinates whose tails look Gaussian: where the ``"auto"`` finish fits the cross
    moments (docs/math.md §6.7).

    With :math:`\\kappa_a = n\\sum_i (z_{ia} - \\bar z_a)^4 / (\\sum_i (z_{ia} - \\bar
    z_a)^2)^2 - 3` each coordinate's sample excess kurtosis and
    :math:`\\sigma_\\kappa = \\sqrt{24/n}` its
    standard error under a Gaussian,

    .. math::
        G = \\{a : \\kappa_a \\le 3\\sigma_\\kappa\\}\\ \\text{if}\\
        \\operatorname{median}_b \\kappa_b \\le 3 \\cdot 1.2533\\,\\sigma_\\kappa/\\sqrt d,
        \\ \\text{else}\\ \\varnothing:

    a coordinate with heavy tails is left out, and all of them are when most coordinates have
    heavy tails (the median's bound is three of its standard errors over :math:`d` independent
    Gaussian coordinates): then what looks Gaussian in a few of them is the noise of :math:`n`
    draws of a heavy tail. Light tails (negative :math:`\\kappa`) pass. A coordinate in which the
    particles do not vary has no kurtosis: it is left out, and the median is over the others.

    Parameters
    ----------
    particles : (n, d)
        Latent particles (the chain's state, ``state.particles``).

    Returns
    -------
    (d,) bool array

    Examples
    --------
    >>> import jax
    >>> z = jax.random.normal(jax.random.key(0), (100, 4))
    >>> gaussian_tails(z).tolist()
    [True, True, True, True]
    >>> gaussian_tails(jax.random.t(jax.random.key(0), 3.0, (100, 4))).tolist()
    [False, False, False, False]
    """
    z = jnp.asarray(particles)
    n, d = z.shape
    zc = z - jnp.mean(z, axis=0)
    kurtosis = n * jnp.sum(zc**4, axis=0) / jnp.sum(zc**2, axis=0) ** 2 - 3.0
    se = np.sqrt(24.0 / n)
    most_light = jnp.nanmedian(kurtosis) <= TAIL_SES * 1.2533 * se / np.sqrt(d)
    return most_light & (kurtosis <= TAIL_SES * se)


def finish(
    state: SVGDState,
    log_prob: LogProb,
    optim: Any,
    preconditioner: Preconditioner | None = None,
    num_steps: int = 100,
    moments: str = "auto",
) -> tuple[SVGDState, SVGDInfo, jax.Array]:
    """The Stein-moment finish of noisy SVGD: ``num_steps`` deterministic SVGD steps of ``optim``
    from the particles of ``state``, with a linear kernel whose fixed points satisfy the Stein
    moment equations (:func:`~numpyro_dsd.svgd.core.moment_force`, docs/math.md §6.7).

    Noisy SVGD's particles are as good as independent draws of the target: each mean is off by
    about :math:`\\sigma/\\sqrt n`. A short deterministic run towards the moment equations
    removes most of that error where the target (a flow's latent space) is close to Gaussian
    (docs/svgd.md, "The default: noisy, then a finish"). The kernel's joint coordinates
    :math:`G`, fixed at the start:

    - ``moments="full"``: all: :math:`\\frac1n\\sum_i s_i = 0` and
      :math:`\\frac1n\\sum_i s_i(z_i - \\bar z)^\\top = -I`, the whole covariance; on heavy
      tails the :math:`d^2` equations are fitted to the noise of n draws and the particles drift
      outwards (20-50 Student-t(5) marginals: variance 1.1-1.5 after 100 steps);
    - ``moments="diagonal"``: none: each coordinate's :math:`\\frac1n\\sum_i s_{ia} = 0` and
      :math:`\\frac1n\\sum_i s_{ia}(z_{ia} - \\bar z_a) = -1`, a location and a scale per
      coordinate, stable on heavy tails, blind to correlations;
    - ``moments="auto"`` (default): :func:`gaussian_tails` of the particles: the full finish
      where the tails look Gaussian, the diagonal one where they do not.

    Parameters
    ----------
    state : SVGDState
        The chain's state: its particles and preconditioner parameters are used.
    log_prob, optim, preconditioner
        As in :func:`~numpyro_dsd.svgd.core.build_step`. The optimizer starts afresh.
    num_steps : int
        Length of the finish (static).
    moments : {"auto", "full", "diagonal"}
        The kernel, as above.

    Returns
    -------
    (SVGDState, SVGDInfo, joint)
        ``state`` with the finished particles (resume from the chain's own state), the
        per-step record, ``(num_steps,)`` leaves (a non-finite step is not taken: ``info.finite``
        False), and the ``(d,)`` bool mask :math:`G`.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, optax
    >>> from numpyro_dsd.svgd.core import init
    >>> log_prob = lambda x: -0.5 * jnp.sum(x**2)
    >>> x0 = 1.3 * jax.random.normal(jax.random.key(0), (100, 2)) + 0.3
    >>> state = init(x0, log_prob, optax.sgd(0.1))
    >>> done, infos, joint = finish(state, log_prob, optax.adagrad(0.1), moments="diagonal")
    >>> z = done.particles
    >>> bool(jnp.abs(z.mean(0)).max() < 1e-3), bool(jnp.abs(z.var(0) - 1).max() < 1e-3)
    (True, True)
    """
    if moments not in FINISH_KERNELS:
        raise ValueError(f"moments must be one of {FINISH_KERNELS}; got {moments!r}.")
    opt = as_optax(optim)
    z0 = state.particles
    joint = {
        "auto": lambda: gaussian_tails(z0),
        "full": lambda: jnp.ones(z0.shape[1], bool),
        "diagonal": lambda: jnp.zeros(z0.shape[1], bool),
    }[moments]()

    def step(carry: tuple, _: Any) -> tuple[tuple, SVGDInfo]:
        z, opt_state = carry
        _, scores = latent_scores(z, log_prob, preconditioner, state.precond_params)
        phi, v = moment_force(z, scores, joint)
        updates, new_opt_state = opt.update(-phi, opt_state, z)
        new = (optax.apply_updates(z, updates), new_opt_state)
        return guarded_step(new, (z, opt_state), scores, phi, v)

    (z, _), infos = jax.lax.scan(step, (z0, opt.init(z0)), length=num_steps)
    return state._replace(particles=z), infos, joint
