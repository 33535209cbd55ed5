"""Greedy Stein thinning (Riabiz et al. 2022; docs/math.md §2.8).

From draws :math:`x_{1:n}` pick indices :math:`\\pi_1, \\dots, \\pi_m` one at a time,

.. math::
    \\pi_t = \\arg\\min_{i}\\Big[\\tfrac12 k^0(x_i, x_i) + \\sum_{j<t} k^0(x_{\\pi_j}, x_i)\\Big],

repeats allowed. Each step greedily minimises the V-statistic of the selected set,
:math:`\\hat V_t = t^{-2}\\sum_{s,s' \\le t} k^0(x_{\\pi_s}, x_{\\pi_{s'}})`, so the thinned
draws correct for burn-in and bias instead of only for autocorrelation.

The bracket is kept as a running (n,) vector; step :math:`t` adds one column
:math:`k^0(x_{\\pi_t}, \\cdot)` computed from the per-point features of
:func:`numpyro_dsd.stein.prepare`.
So :math:`m` steps cost :math:`O(nmd)` time (:math:`O(nmd^2)` with a position-dependent
:math:`M(x)`) and :math:`O(n)` memory; the :math:`n \\times n` matrix is never formed. Any diffusion
works: with a :class:`~numpyro_dsd.FlowDiffusion` the features are the latent points and scores
(Theorem 3.5), and the indices are those of the original draws.

The minimised brackets also give the thinned set's KSD for free: the sum over :math:`t` of
:math:`\\tfrac12 k^0(x_{\\pi_t}, x_{\\pi_t}) + \\sum_{j<t} k^0(x_{\\pi_j}, x_{\\pi_t})` is
:math:`\\tfrac{m^2}{2}\\hat V_m`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from numpyro_dsd._validation import check_overflow, positive_int
from numpyro_dsd.stein.diffusion import Diffusion
from numpyro_dsd.stein.engine import SteinKernel, prepare
from numpyro_dsd.stein.kernels import IMQ, Gaussian
from numpyro_dsd.vocabulary import renamed_arguments

__all__ = ["greedy_stein", "thin_indices", "thinned_ksd"]


def _column(
    tile_fn: Callable, feats: NamedTuple, consts: tuple, diag: jax.Array, i: jax.Array
) -> jax.Array:
    """:math:`k^0(x_i, x_j)` for all j (n,), with the exact diagonal at j = i."""
    row = jax.tree_util.tree_map(
        lambda a: jax.lax.dynamic_index_in_dim(a, i, axis=0, keepdims=True), feats
    )
    col = tile_fn(row, feats, consts)[0]
    return col.at[i].set(diag[i])


@partial(jax.jit, static_argnames=("tile_fn", "m"))
def _greedy_scan(
    tile_fn: Callable, feats: NamedTuple, consts: tuple, diag: jax.Array, m: int
) -> tuple[jax.Array, jax.Array]:
    def step(objective: jax.Array, _: None) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        i = jnp.argmin(objective)
        return objective + _column(tile_fn, feats, consts, diag, i), (i, objective[i])

    _, (idx, gains) = jax.lax.scan(step, 0.5 * diag, None, length=m)
    return idx, gains


def _greedy(sk: SteinKernel, m: int) -> tuple[jax.Array, jax.Array]:
    idx, gains = _greedy_scan(sk.tile_fn, sk.feats, sk.consts, sk.diag, m)
    check_overflow(gains, "Stein thinning's objective on x and scores")
    return idx, gains


@renamed_arguments(m="num_points")
def greedy_stein(sk: SteinKernel, num_points: int) -> tuple[jax.Array, jax.Array]:
    """Greedy Stein thinning on a prepared Stein kernel: the functional core.

    .. math::
        \\pi_t = \\arg\\min_i g_t(i),\\qquad
        g_t(i) = \\tfrac12 k^0(x_i, x_i) + \\sum_{j<t} k^0(x_{\\pi_j}, x_i).

    One ``lax.scan`` of m = ``num_points`` steps inside one ``jit``; each step evaluates one
    column of
    :math:`K^0` (``sk.tile_fn`` on one row of features against all n), so the cost is
    :math:`O(nmd)` time and :math:`O(n)` memory. Ties go to the smallest index.

    Parameters
    ----------
    sk : SteinKernel
        From :func:`numpyro_dsd.stein.prepare` (any kernel and diffusion).
    num_points : int
        Number of selections m >= 1 (m > n is fine: points repeat); ``m`` is its deprecated
        name.

    Returns
    -------
    indices : (m,) int32
        :math:`\\pi_1, \\dots, \\pi_m`.
    gains : (m,)
        :math:`g_t(\\pi_t)`; :math:`\\hat V_t = \\frac{2}{t^2}\\sum_{s \\le t} g_s(\\pi_s)` is the
        thinned set's squared KSD after t steps.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from numpyro_dsd.stein.engine import prepare
    >>> x = jnp.linspace(-3.0, 3.0, 61)[:, None]
    >>> idx, gains = greedy_stein(prepare(x, -x), 3)
    >>> idx  # x = 0 (the mode) first, then x = -0.6 and x = 1.0
    Array([30, 24, 40], dtype=int32)
    """
    return _greedy(sk, positive_int(num_points, "num_points"))


@renamed_arguments(m="num_points")
def thin_indices(
    x: ArrayLike,
    scores: ArrayLike | None = None,
    num_points: int | None = None,
    *,
    log_prob: Callable[[jax.Array], jax.Array] | None = None,
    kernel: IMQ | Gaussian | None = None,
    diffusion: Diffusion | None = None,
) -> jax.Array:
    """Indices of m = ``num_points`` draws chosen by greedy Stein thinning (Riabiz et al. 2022,
    docs/math.md §2.8).

    .. math::
        \\pi_t = \\arg\\min_i\\Big[\\tfrac12 k^0(x_i, x_i) + \\sum_{j<t} k^0(x_{\\pi_j}, x_i)\\Big],
        \\quad t = 1, \\dots, m .

    The Stein kernel :math:`k^0` is built once (:func:`numpyro_dsd.stein.prepare`); each step adds
    one column, :math:`O(nmd)` time and :math:`O(n)` memory. With ``IMQ(bandwidth=P)``,
    ``diffusion=None`` and ``P`` in ``"id"``, ``"med"``, ``"sclmed"``, ``"smpcov"`` the indices
    are those of ``stein_thinning.thinning.thin(x, scores, m, standardize=False,
    preconditioner=P)`` (stein-thinning's own default is ``"sclmed"``).

    Parameters
    ----------
    x : (n, d)
        Draws (NumPyro's unconstrained space for a model).
    scores : (n, d), optional
        :math:`\\nabla\\log p(x_i)`. Give this or ``log_prob``.
    num_points : int
        Number of points to select, m >= 1. Indices may repeat (the greedy rule allows it),
        so m > n is allowed. ``m`` is its deprecated name.
    log_prob : callable (d,) -> scalar, optional
        Log density, differentiated with ``jax.grad`` when ``scores`` is not given.
    kernel : IMQ or Gaussian, optional
        Base kernel; default :func:`~numpyro_dsd.stein.kernels.default_kernel`, its bandwidth
        resolved on all n points (latent points for a flow diffusion).
    diffusion : Identity, Constant, PositionDependent or FlowDiffusion, optional
        Default ``Identity()`` (the Langevin Stein kernel). With a ``FlowDiffusion`` the greedy
        runs on the latent points (Theorem 3.5) and the indices refer to ``x``.

    Returns
    -------
    jax.Array (m,) int32
        Row indices into ``x``, in selection order.

    Raises
    ------
    ValueError
        If ``num_points`` is missing or not a positive integer, or ``x``/``scores`` are malformed or
        contain NaN or inf.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> x = jax.random.normal(jax.random.key(0), (500, 2)) + 3.0  # a biased sample
    >>> x = jnp.concatenate([x, jax.random.normal(jax.random.key(1), (500, 2))])
    >>> idx = thin_indices(x, -x, 20)  # target N(0, I)
    >>> bool(jnp.mean(idx >= 500) > 0.8)  # mostly from the unbiased half
    True
    """
    if num_points is None:
        raise ValueError("thin_indices needs num_points, the number of points to select.")
    num_points = positive_int(num_points, "num_points")
    sk = prepare(x, scores, log_prob=log_prob, kernel=kernel, diffusion=diffusion)
    return _greedy(sk, int(num_points))[0]


def thinned_ksd(gains: jax.Array) -> jax.Array:
    """:math:`\\sqrt{\\hat V_m}` of the thinned set from the greedy gains:
    :math:`\\hat V_m = \\frac{2}{m^2}\\sum_t g_t(\\pi_t)`."""
    m = gains.shape[0]
    return jnp.sqrt(jnp.maximum(2.0 * jnp.sum(gains) / m**2, 0.0))
