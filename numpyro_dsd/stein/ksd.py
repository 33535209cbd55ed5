"""Kernel Stein discrepancies of samples: the V- and U-statistics and the Stein Gram matrix
(docs/math.md §2).

Thin entry points over the blocked engine (:mod:`numpyro_dsd.stein.engine`): validate, build
the :class:`~numpyro_dsd.stein.engine.SteinKernel` once, sum its tiles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from numpyro_dsd._validation import check_overflow, check_weights, is_concrete, positive_int
from numpyro_dsd.stein.diffusion import Diffusion
from numpyro_dsd.stein.engine import local_devices, prepare, tile_size
from numpyro_dsd.stein.kernels import IMQ, Gaussian
from numpyro_dsd.stein.nystrom import nystrom, nystrom_squared
from numpyro_dsd.stein.tiling import weighted_pair_sum
from numpyro_dsd.vocabulary import describe, rng_key_or_default

__all__ = ["ksd", "ksd_squared", "stein_matrix", "check_estimator", "ESTIMATORS"]

Statistic = Literal["v", "u"]
Estimator = Literal["exact", "nystrom"]
ESTIMATORS = ("exact", "nystrom")


def check_estimator(estimator: object, num_inducing: object, statistic: str = "v") -> None:
    """``estimator`` is ``"exact"`` or ``"nystrom"``; ``num_inducing`` only with ``"nystrom"``
    (a positive int); the Nyström estimate is of the V-statistic.

    Examples
    --------
    >>> check_estimator("nystrom", 100)
    >>> check_estimator("exact", 100)
    Traceback (most recent call last):
    ...
    ValueError: num_inducing=100 is used only by estimator='nystrom'; ...
    """
    if not isinstance(estimator, str) or estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be 'exact' or 'nystrom'; got {describe(estimator)}.")
    if estimator == "exact" and num_inducing is not None:
        raise ValueError(
            f"num_inducing={num_inducing!r} is used only by estimator='nystrom'; drop it "
            "or pass estimator='nystrom'."
        )
    if estimator == "nystrom":
        if num_inducing is not None:
            positive_int(num_inducing, "num_inducing")
        if statistic != "v":
            raise ValueError(
                "estimator='nystrom' estimates the V-statistic; use statistic='v' with it."
            )


def ksd_squared(
    x: ArrayLike,
    scores: ArrayLike | None = None,
    *,
    log_prob: Callable[[jax.Array], jax.Array] | None = None,
    kernel: IMQ | Gaussian | None = None,
    diffusion: Diffusion | None = None,
    statistic: Statistic = "v",
    weights: ArrayLike | None = None,
    block_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    estimator: Estimator = "exact",
    num_inducing: int | None = None,
    rng_key: jax.Array | None = None,
) -> jax.Array:
    """Squared (diffusion) KSD: the V- or U-statistic itself, or the Nyström estimate of the V.

    .. math::
        \\hat V = \\sum_{i,j} w_i w_j k^0(x_i, x_j),\\qquad
        \\hat U = \\frac{\\hat V - \\sum_i w_i^2 k^0(x_i, x_i)}{1 - \\sum_i w_i^2}

    (with :math:`w_i = 1/n`, :math:`\\hat U = \\frac{1}{n(n-1)}\\sum_{i\\neq j} k^0`; it is
    unbiased for :math:`\\mathrm{KSD}^2` and can be negative).

    Parameters
    ----------
    x : (n, d)
        Points.
    scores : (n, d), optional
        :math:`\\nabla \\log p(x_i)`. Give this or ``log_prob``.
    log_prob : callable (d,) -> scalar, optional
        Log density (unnormalised is fine), differentiated with ``jax.grad``.
    kernel : IMQ or Gaussian
        Base kernel; default :func:`~numpyro_dsd.stein.kernels.default_kernel`
        (``IMQ(bandwidth="med")``). Its bandwidth is resolved on the diffusion's points.
    diffusion : Identity, Constant, PositionDependent, ...
        Default ``Identity()``.
    statistic : {"v", "u"}
        Which estimator of :math:`\\mathrm{KSD}^2`.
    weights : (n,), optional
        Non-negative weights summing to one.
    block_size : int, optional
        Tile size (default 512 for constant M, 128 for position-dependent M).
    devices : sequence of devices, optional
        Devices to shard the pairs over; default all local devices (all processes' devices
        under ``jax.distributed``: docs/scale.md).
    estimator : {"exact", "nystrom"}
        ``"exact"``: :math:`O(n^2)` pairs. ``"nystrom"``: the Nyström estimate of
        :math:`\\hat V` (:func:`numpyro_dsd.stein.nystrom.nystrom_squared`; ``statistic="v"``
        only), :math:`O(nm + m^3)` for m inducing points, within :math:`O_P(n^{-1/2})` of the
        KSD (docs/scale.md, "Near-linear KSD", with the measured error against m).
    num_inducing : int, optional
        m for ``estimator="nystrom"``; default
        :func:`~numpyro_dsd.stein.nystrom.default_num_inducing` (:math:`\\lceil 4\\sqrt n
        \\rceil`).
    rng_key : jax.Array, optional
        Draws the inducing points for ``estimator="nystrom"``; None means
        ``jax.random.key(0)`` (:mod:`numpyro_dsd.vocabulary`'s key rule). Unused by
        ``"exact"``.

    Returns
    -------
    Scalar array in the inputs' float dtype, at least float32 (float16 and bfloat16 inputs are
    computed in float32; integers in JAX's default float).

    Raises
    ------
    ValueError
        For malformed or non-finite inputs, and when finite inputs overflow the float dtype
        (rescale them or enable float64).
    TypeError
        For complex or non-numeric inputs.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> x = jax.random.normal(jax.random.key(0), (1000, 2))
    >>> float(ksd_squared(x, -x, statistic="u")) < 0.01
    True
    >>> v = ksd_squared(x, -x, estimator="nystrom", num_inducing=200)
    >>> bool(abs(v / ksd_squared(x, -x) - 1) < 0.1)
    True
    """
    if not isinstance(statistic, str) or statistic not in ("v", "u"):
        raise ValueError(f"statistic must be 'v' or 'u'; got {describe(statistic)}.")
    check_estimator(estimator, num_inducing, statistic)
    key, _ = rng_key_or_default(rng_key)
    sk = prepare(x, scores, log_prob=log_prob, kernel=kernel, diffusion=diffusion)
    if statistic == "u" and sk.n < 2:
        raise ValueError("statistic='u' (the U-statistic) needs n >= 2 points in x.")
    w = check_weights(weights, sk.n, sk.diag.dtype)
    if estimator == "nystrom":
        ny = nystrom(sk, key, num_inducing)
        v = nystrom_squared(sk, ny, w, block_size=block_size, devices=devices)
        check_overflow(v, "The KSD of x and scores")
        return v
    v = weighted_pair_sum(
        sk.tile_fn,
        sk.feats,
        sk.consts,
        sk.diag,
        w,
        block=tile_size(sk, block_size),
        devices=local_devices(devices),
    )
    if statistic == "u":
        w2 = jnp.sum(w * w)
        if weights is not None and is_concrete(w2) and float(w2) >= 1.0 - 1e-12:
            raise ValueError(
                "statistic='u' (the U-statistic) needs weights on at least two points."
            )
        v = (v - jnp.sum(w * w * sk.diag)) / (1.0 - w2)
    check_overflow(v, "The KSD of x and scores")
    return v


def ksd(
    x: ArrayLike,
    scores: ArrayLike | None = None,
    *,
    log_prob: Callable[[jax.Array], jax.Array] | None = None,
    kernel: IMQ | Gaussian | None = None,
    diffusion: Diffusion | None = None,
    statistic: Statistic = "v",
    weights: ArrayLike | None = None,
    block_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    estimator: Estimator = "exact",
    num_inducing: int | None = None,
    rng_key: jax.Array | None = None,
) -> jax.Array:
    """Kernel Stein discrepancy :math:`\\sqrt{\\hat V}`, or :math:`\\sqrt{\\max(\\hat U, 0)}`.

    The diffusion KSD of docs/math.md §2: with ``diffusion=Identity()`` (default) the Langevin KSD,
    with ``Constant(M)`` or ``PositionDependent(fn)`` the diffusion KSD. Same arguments as
    :func:`ksd_squared`.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from numpyro_dsd import ksd
    >>> x = jax.random.normal(jax.random.key(0), (2000, 3))
    >>> good = ksd(x, -x)  # draws of N(0, I), scores of N(0, I)
    >>> bad = ksd(x + 0.5, -(x + 0.5))  # draws of N(0.5, I), scores of N(0, I)
    >>> bool(bad > 5 * good)
    True
    """
    sq = ksd_squared(
        x,
        scores,
        log_prob=log_prob,
        kernel=kernel,
        diffusion=diffusion,
        statistic=statistic,
        weights=weights,
        block_size=block_size,
        devices=devices,
        estimator=estimator,
        num_inducing=num_inducing,
        rng_key=rng_key,
    )
    return jnp.sqrt(jnp.maximum(sq, 0.0))


def stein_matrix(
    x: ArrayLike,
    scores: ArrayLike | None = None,
    *,
    log_prob: Callable[[jax.Array], jax.Array] | None = None,
    kernel: IMQ | Gaussian | None = None,
    diffusion: Diffusion | None = None,
) -> jax.Array:
    """The (n, n) Stein Gram matrix :math:`K^0_{ij} = k^0(x_i, x_j)` (small n: O(n^2) memory).

    :math:`\\hat V = n^{-2}\\mathbf 1^\\top K^0 \\mathbf 1`. Same arguments as :func:`ksd`.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> K = stein_matrix(jnp.array([[0.0], [1.0], [2.0]]), jnp.array([[1.0], [0.0], [-1.0]]))
    >>> K.shape
    (3, 3)
    """
    K = prepare(x, scores, log_prob=log_prob, kernel=kernel, diffusion=diffusion).matrix()
    check_overflow(K, "The Stein matrix of x and scores")
    return K
