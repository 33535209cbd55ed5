"""The KSD along a chain: :math:`\\sqrt{\\hat V_m}` of the first m draws for every m
(docs/math.md §2.7).

With :math:`S_m = \\sum_{i,j \\le m} k^0(x_i, x_j)`,

.. math::
    S_m = S_{m-1} + 2\\sum_{i<m} k^0(x_i, x_m) + k^0(x_m, x_m),
    \\qquad \\hat V_m = S_m / m^2,

so the strictly lower row sums :math:`c_m = \\sum_{i<m} k^0(x_i, x_m)` (one blocked pass,
:func:`numpyro_dsd.stein.tiling.pair_matvec` with ``lower=True``) give every prefix at the cost of a
single KSD, :math:`O(n^2 d)`. For exact draws :math:`\\sqrt{\\hat V_m}` falls like
:math:`m^{-1/2}`; a curve that levels off says the chain is biased.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from numpyro_dsd._validation import positive_int
from numpyro_dsd.stein.diffusion import Diffusion
from numpyro_dsd.stein.engine import SteinKernel, local_devices, prepare, tile_size
from numpyro_dsd.stein.kernels import IMQ, Gaussian
from numpyro_dsd.stein.tiling import pair_matvec
from numpyro_dsd.vocabulary import renamed_arguments

__all__ = ["KSDTrace", "prefix_points", "prefix_ksd_squared", "ksd_trace"]


class KSDTrace(NamedTuple):
    """The KSD along a chain (:func:`ksd_trace`); unpacks as ``prefix, ksd = ksd_trace(...)``.

    Attributes
    ----------
    prefix : (k,) ints
        Prefix lengths m: the coordinate of the ``prefix`` dimension (never draw indices).
    ksd : (k,)
        :math:`\\sqrt{\\hat V_m}` of the first m draws.
    """

    prefix: np.ndarray
    ksd: jax.Array


@renamed_arguments(n="num_draws", num="num_prefixes")
def prefix_points(num_draws: int, num_prefixes: int = 20, start: int = 10) -> np.ndarray:
    """About ``num_prefixes`` log-spaced prefix lengths from ``min(start, num_draws)`` to
    ``num_draws`` (distinct ints).

    Examples
    --------
    >>> prefix_points(1000, num_prefixes=4)
    array([  10,   46,  215, 1000])
    """
    num_draws = positive_int(num_draws, "num_draws")
    num_prefixes = positive_int(num_prefixes, "num_prefixes")
    return np.unique(
        np.geomspace(min(start, num_draws), num_draws, num_prefixes).round().astype(int)
    )


def prefix_ksd_squared(
    sk: SteinKernel,
    *,
    block_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> jax.Array:
    """:math:`\\hat V_m` for m = 1..n of a prepared Stein kernel (points in chain order), (n,).

    Examples
    --------
    >>> x = jnp.arange(4.0)[:, None]
    >>> v = prefix_ksd_squared(prepare(x, -x))
    >>> v.shape
    (4,)
    """
    ones = jnp.ones((sk.n, 1), sk.diag.dtype)
    block, devs = tile_size(sk, block_size), local_devices(devices)
    lower = pair_matvec(
        sk.tile_fn, sk.feats, sk.consts, sk.diag, ones, block=block, devices=devs, lower=True
    )[:, 0]
    m = jnp.arange(1, sk.n + 1, dtype=sk.diag.dtype)
    return jnp.cumsum(2.0 * lower + sk.diag) / m**2


@renamed_arguments(points="prefixes")
def ksd_trace(
    x: ArrayLike,
    scores: ArrayLike | None = None,
    *,
    log_prob: Callable[[jax.Array], jax.Array] | None = None,
    kernel: IMQ | Gaussian | None = None,
    diffusion: Diffusion | None = None,
    prefixes: int | ArrayLike = 20,
    block_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> KSDTrace:
    """KSD of the first m draws, :math:`\\sqrt{\\hat V_m}`, at log-spaced m, in one pass.

    Parameters
    ----------
    x : (n, d)
        One chain's draws in sampling order.
    scores, log_prob, kernel, diffusion, block_size, devices
        As for :func:`numpyro_dsd.ksd` (default kernel:
        :func:`~numpyro_dsd.stein.kernels.default_kernel`). Freeze a data-dependent bandwidth
        first (``kernel.frozen(...)``) to compare curves of several chains; otherwise it is
        resolved once on all n draws (every prefix of one chain uses the same kernel).
    prefixes : int or array of ints
        How many log-spaced prefix lengths (:func:`~numpyro_dsd.mcmc.prefix.prefix_points`), or the
        lengths themselves (1..n). ``points`` is its deprecated name.

    Returns
    -------
    KSDTrace
        ``prefix`` (k,) ints, the prefix lengths m, and ``ksd`` (k,),
        :math:`\\sqrt{\\hat V_m}`; it unpacks as ``m, ksd``.

    Examples
    --------
    >>> x = jax.random.normal(jax.random.key(0), (4000, 2))
    >>> m, v = ksd_trace(x, -x, prefixes=3)
    >>> m
    array([  10,  200, 4000])
    >>> bool(v[-1] < v[0] / 5)  # exact draws: falls like m^(-1/2)
    True
    """
    if np.ndim(prefixes) == 0:
        prefixes = positive_int(prefixes, "prefixes")
    sk = prepare(x, scores, log_prob=log_prob, kernel=kernel, diffusion=diffusion)
    ms = prefix_points(sk.n, prefixes) if np.ndim(prefixes) == 0 else np.asarray(prefixes, int)
    if ms.ndim != 1 or ms.size == 0 or ms.min() < 1 or ms.max() > sk.n:
        raise ValueError(f"prefixes must be prefix lengths in 1..{sk.n}; got {ms}.")
    v = prefix_ksd_squared(sk, block_size=block_size, devices=devices)
    return KSDTrace(ms, jnp.sqrt(jnp.maximum(v[ms - 1], 0.0)))
