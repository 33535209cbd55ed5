"""The Nyström KSD: a near-linear estimate of :math:`\\hat V` with a stated error (docs/scale.md).

Kalinke, Szabó & Sriperumbudur (2025) project the Stein mean embedding
:math:`\\hat\\mu = \\sum_i w_i k^0(x_i, \\cdot)` onto the span of :math:`k^0(z_a, \\cdot)` for
m inducing points :math:`z_{1:m}` drawn uniformly without replacement from the draws:

.. math::
    \\lVert P_m \\hat\\mu \\rVert^2 = \\beta^\\top K_{mm}^{+} \\beta, \\qquad
    \\beta = K_{mn} w, \\quad (K_{mn})_{ai} = k^0(z_a, x_i),\\ (K_{mm})_{ab} = k^0(z_a, z_b),

at a cost of :math:`O(nm)` kernel evaluations and :math:`O(m^3)` for a Cholesky factor of
:math:`K_{mm}`, against :math:`O(n^2)` for :math:`\\hat V`. With :math:`m \\gtrsim \\sqrt n
\\log n` and sub-Gaussian Stein features its root is within :math:`O_P(n^{-1/2})` of the KSD,
the rate of :math:`\\hat V^{1/2}` itself (their Theorem 1).

A projection never increases a norm, and what it loses is mostly each point's own term: of
:math:`\\hat V = \\sum_i w_i^2 k^0(x_i, x_i) + \\sum_{i \\ne j} w_i w_j k^0(x_i, x_j)`, the
diagonal (:math:`n^{-1}\\mathbb E\\,k^0(x, x)`) is most of :math:`\\hat V` for good draws,
and its projection :math:`q_i = k_i^\\top K_{mm}^+ k_i` falls short of it. So
:func:`nystrom_squared` keeps the diagonal exact: it adds
:math:`\\sum_i w_i^2 (k^0(x_i, x_i) - q_i)`, estimated from :math:`s = \\max(64, m/4)`
random rows. On i.i.d. draws at :math:`n = 10^5` and the default m the projection alone is 2.9%
low, the corrected estimate within 0.4% (docs/scale.md, "Near-linear KSD"). The wild
bootstrap carries over (Kalinke et al.'s Nyström bootstrap): a
replicate is :math:`n^{-1} (K_{mn} W)^\\top K_{mm}^+ (K_{mn} W)` for a sign vector W; the
diagonal correction shifts the statistic and every replicate alike, so it leaves the p-value
as it is (:func:`numpyro_dsd.mcmc.bootstrap.ksd_test` with ``estimator="nystrom"``).

Everything comes from one primitive, :func:`inducing_matvec` (:math:`K_{mn} W` for a block of
vectors W (n, k), blocked over rows and sharded over devices, never more than an (m, B) tile in
memory), and the factor of :math:`K_{mm}` (:func:`nystrom`). It needs only Stein-kernel
evaluations, so it works with every diffusion.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from numpyro_dsd._validation import positive_int
from numpyro_dsd.stein.engine import SteinKernel, local_devices
from numpyro_dsd.stein.tiling import TileFn, map_row_blocks

__all__ = [
    "DEFAULT_INDUCING_FACTOR",
    "GAP_ROWS_MIN",
    "ROW_BLOCK",
    "Nystrom",
    "default_num_inducing",
    "inducing_matvec",
    "nystrom",
    "nystrom_squared",
    "prefix_weights",
    "projected_quadratic",
    "nystrom_row_means",
]

#: :func:`default_num_inducing` takes :math:`m = \\lceil c \\sqrt n \\rceil` inducing points with
#: this :math:`c` (docs/scale.md, "Near-linear KSD": the measured error against m).
DEFAULT_INDUCING_FACTOR = 4.0

#: The diagonal's gap (:class:`Nystrom`) is estimated on :math:`s = \\max(64, m/4)` random rows
#: (at most n): :math:`O(m^2 s)`, a quarter of the cost of the rows' projections at s = m.
GAP_ROWS_MIN = 64

#: Rows per block of :func:`inducing_matvec` (a (B, m) tile of the kernel at a time): 512 is
#: the fastest or within 5% of it for 1 and 301 columns at n = 10^5, m = 1265, float32 and
#: float64 (1024: 20% slower for one column in float64; docs/benchmarks.md).
ROW_BLOCK = 512


class Nystrom(NamedTuple):
    """The Nyström projection of a Stein kernel (:func:`nystrom`).

    Attributes
    ----------
    indices : (m,) int
        Rows of the inducing points among the n draws.
    chol : (m, m)
        Lower Cholesky factor :math:`L`, :math:`LL^\\top = K_{mm} + \\delta I` with a jitter
        :math:`\\delta` of ``rcond`` times the mean of :math:`\\operatorname{diag} K_{mm}`
        (repeated draws, such as a Metropolis chain's rejections, make :math:`K_{mm}` singular).
    rows : (s,) int
        Rows drawn (uniformly, without replacement) to estimate the diagonal's gap.
    gap : (s,)
        :math:`k^0(x_i, x_i) - q_i` at ``rows``, with :math:`q_i = k_i^\\top K_{mm}^+ k_i`
        (:math:`k_i = K_{mi}`) the projected diagonal: what the projection misses of each
        point's own term.
    """

    indices: jax.Array
    chol: jax.Array
    rows: jax.Array
    gap: jax.Array

    @property
    def num_inducing(self) -> int:
        return int(self.indices.shape[0])


def default_num_inducing(n: int) -> int:
    """:math:`m = \\min(n, \\lceil c \\sqrt n \\rceil)` with ``c =``
    :data:`DEFAULT_INDUCING_FACTOR`: at :math:`n = 10^5`, 1265 inducing points.

    Examples
    --------
    >>> default_num_inducing(100_000), default_num_inducing(10)
    (1265, 10)
    """
    n = positive_int(n, "n")
    return min(n, math.ceil(DEFAULT_INDUCING_FACTOR * math.sqrt(n)))


def _rows(feats: object, idx: jax.Array) -> object:
    return jax.tree_util.tree_map(lambda a: a[idx], feats)


def inducing_matvec(
    sk: SteinKernel,
    indices: jax.Array,
    w: jax.Array,
    *,
    block_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> jax.Array:
    """:math:`K_{mn} W`, (m, k): :math:`\\sum_i k^0(z_a, x_i) W_{ic}` for the inducing rows
    ``indices`` (m,) and ``w`` (n, k), blocked over the n rows (:data:`ROW_BLOCK` per block) and
    sharded over ``devices`` (default: all local ones). ``w`` may be int8 signs; it is cast to
    the kernel's dtype a block at a time, so (n, k) floats are never held.

    Examples
    --------
    >>> from numpyro_dsd.stein.engine import prepare
    >>> x = jax.random.normal(jax.random.key(0), (300, 2))
    >>> sk = prepare(x, -x)
    >>> idx, w = jnp.arange(0, 300, 10), jnp.ones((300, 1))
    >>> bool(jnp.allclose(inducing_matvec(sk, idx, w), sk.matrix()[idx] @ w, rtol=1e-4))
    True
    """
    n = sk.n
    if w.ndim != 2 or w.shape[0] != n:
        raise ValueError(f"w must have shape ({n}, k); got {tuple(w.shape)}.")
    block = min(ROW_BLOCK if block_size is None else positive_int(block_size, "block_size"), n)
    devs = local_devices(devices)
    return _inducing_matvec(
        sk.tile_fn, sk.feats, sk.consts, indices, jnp.asarray(w), block=block, devices=devs
    )


@partial(jax.jit, static_argnames=("tile_fn", "block", "devices"))
def _inducing_matvec(
    tile_fn: TileFn,
    feats: object,
    consts: object,
    indices: jax.Array,
    w: jax.Array,
    *,
    block: int,
    devices: Sequence[jax.Device],
) -> jax.Array:
    n = w.shape[0]
    inducing = _rows(feats, indices)
    dtype = jax.tree_util.tree_leaves(feats)[0].dtype
    blocks = -(-n // block)
    blocks += -blocks % len(devices)  # whole blocks per device; padded rows have zero weight
    fb, wb = jax.tree_util.tree_map(
        lambda a: jnp.pad(a, [(0, blocks * block - n)] + [(0, 0)] * (a.ndim - 1)).reshape(
            blocks, block, *a.shape[1:]
        ),
        (feats, w),
    )

    def local(fb: object, wb: jax.Array, inducing: object, consts: object) -> jax.Array:
        def body(acc: jax.Array, rows: tuple) -> tuple[jax.Array, None]:
            f, wr = rows  # w may be int8 signs: cast a block at a time
            return acc + tile_fn(inducing, f, consts) @ wr.astype(dtype), None

        out, _ = jax.lax.scan(body, jnp.zeros((indices.shape[0], w.shape[1]), dtype), (fb, wb))
        return jax.lax.psum(out, "rows")

    mesh = Mesh(np.asarray(devices), ("rows",))
    rows, rep = PartitionSpec("rows"), PartitionSpec()
    sharded = jax.shard_map(
        local, mesh=mesh, in_specs=(rows, rows, rep, rep), out_specs=rep, check_vma=False
    )
    return sharded(fb, wb, inducing, consts)


def _solve(ny: Nystrom, k: jax.Array) -> jax.Array:
    """:math:`L^{-1} k` for k (m, j)."""
    return jax.scipy.linalg.solve_triangular(ny.chol, k, lower=True)


@partial(jax.jit, static_argnames=("tile_fn",))
def _factor(
    tile_fn: TileFn,
    feats: object,
    consts: object,
    diag: jax.Array,
    indices: jax.Array,
    rows: jax.Array,
    rcond: float,
) -> tuple[jax.Array, jax.Array]:
    """(:math:`L`, the gap at ``rows``) of :class:`Nystrom`, in one compiled call."""
    inducing, sampled = _rows(feats, indices), _rows(feats, rows)
    kmm = tile_fn(inducing, inducing, consts)
    kmm = kmm.at[jnp.diag_indices(indices.shape[0])].set(diag[indices])
    jitter = rcond * jnp.mean(diag[indices])
    eye = jnp.eye(kmm.shape[0], dtype=kmm.dtype)
    chol = jnp.linalg.cholesky(0.5 * (kmm + kmm.T) + jitter * eye)
    k = tile_fn(inducing, sampled, consts)  # (m, s)
    k = jnp.where(indices[:, None] == rows[None, :], diag[rows][None, :], k)
    q = jnp.sum(jax.scipy.linalg.solve_triangular(chol, k, lower=True) ** 2, axis=0)
    return chol, diag[rows] - q


def projected_quadratic(ny: Nystrom, kw: jax.Array) -> jax.Array:
    """:math:`\\operatorname{diag}\\big((K_{mn}W)^\\top K_{mm}^+ (K_{mn}W)\\big)`, (k,), from
    ``kw`` :math:`= K_{mn} W` (m, k) (:func:`inducing_matvec`): the Nyström V-statistic of each
    column of W (a bootstrap replicate for a sign vector, times :math:`n^{-2}`).

    Examples
    --------
    >>> from numpyro_dsd.stein.engine import prepare
    >>> x = jax.random.normal(jax.random.key(0), (50, 2))
    >>> sk = prepare(x, -x)
    >>> ny = nystrom(sk, jax.random.key(1), num_inducing=50)  # every point: the exact V
    >>> w = jnp.full((50, 1), 1 / 50)
    >>> v = projected_quadratic(ny, inducing_matvec(sk, ny.indices, w))[0]
    >>> bool(jnp.allclose(v, w[:, 0] @ sk.matrix() @ w[:, 0], rtol=1e-3))
    True
    """
    return jnp.sum(_solve(ny, kw) ** 2, axis=0)


def nystrom(
    sk: SteinKernel,
    rng_key: jax.Array,
    num_inducing: int | None = None,
    *,
    rcond: float | None = None,
) -> Nystrom:
    """Draw ``num_inducing`` inducing points uniformly without replacement from the n points of
    ``sk``, factor :math:`K_{mm}` and estimate the diagonal's gap on
    :math:`\\max(64, m/4)` random rows (:data:`GAP_ROWS_MIN`).

    Default ``num_inducing``: :func:`default_num_inducing`; ``num_inducing >= n`` takes every
    point (then the projection is exact up to the jitter). ``rcond`` sets the jitter
    (:class:`Nystrom`; default :math:`10 m` machine epsilons). Cost :math:`O(m^3)`.

    Examples
    --------
    >>> from numpyro_dsd.stein.engine import prepare
    >>> x = jax.random.normal(jax.random.key(0), (400, 2))
    >>> nystrom(prepare(x, -x), jax.random.key(1)).num_inducing
    80
    """
    n = sk.n
    m = num_inducing
    m = default_num_inducing(n) if m is None else min(n, positive_int(m, "num_inducing"))
    k_ind, k_rows = jax.random.split(rng_key)
    indices = jnp.arange(n) if m == n else jnp.sort(_subset(k_ind, n, m))
    rows = _subset(k_rows, n, min(n, max(GAP_ROWS_MIN, m // 4)))
    if rcond is None:
        rcond = 10.0 * m * float(jnp.finfo(sk.diag.dtype).eps)
    chol, gap = _factor(sk.tile_fn, sk.feats, sk.consts, sk.diag, indices, rows, rcond)
    return Nystrom(indices, chol, rows, gap)


@partial(jax.jit, static_argnums=(1, 2))
def _subset(key: jax.Array, n: int, size: int) -> jax.Array:
    """``size`` of ``range(n)`` uniformly without replacement: the indices of the largest of n
    uniforms (half the time of ``jax.random.choice(..., replace=False)``'s permutation)."""
    return jax.lax.top_k(jax.random.uniform(key, (n,)), size)[1]


def nystrom_squared(
    sk: SteinKernel,
    ny: Nystrom,
    weights: jax.Array,
    *,
    block_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> jax.Array:
    """The Nyström estimate of :math:`\\hat V = \\sum_{ij} w_i w_j k^0(x_i, x_j)`: the
    projected off-diagonal terms and the exact diagonal,

    .. math::
        \\hat V_{\\mathrm N} = \\beta^\\top K_{mm}^+ \\beta
        + \\frac{n}{s}\\sum_{i \\in \\mathrm{rows}} w_i^2\\big(k^0(x_i, x_i) - q_i\\big),
        \\qquad \\beta = K_{mn} w,

    the second term an unbiased estimate of :math:`\\sum_i w_i^2 (k^0(x_i, x_i) - q_i)` from
    the :math:`s` random rows of ``ny``. The projection alone misses most of the diagonal,
    :math:`n^{-1}\\,\\mathbb E\\,k^0(x, x)`, which is most of :math:`\\hat V` for good draws
    (docs/scale.md, "Near-linear KSD").

    Parameters
    ----------
    sk, ny
        The Stein kernel and its projection (:func:`nystrom`).
    weights : (n,) or (n, k)
        One weight vector, or k of them (e.g. :func:`prefix_weights`): one estimate each.
    block_size, devices
        As for :func:`inducing_matvec`.

    Returns
    -------
    Scalar, or (k,).

    Examples
    --------
    >>> from numpyro_dsd.stein.engine import prepare
    >>> x = jax.random.normal(jax.random.key(0), (2000, 2))
    >>> sk = prepare(x, -x)
    >>> w = jnp.full(2000, 1 / 2000)
    >>> v = nystrom_squared(sk, nystrom(sk, jax.random.key(1)), w)
    >>> bool(jnp.abs(v / (w @ sk.matrix() @ w) - 1) < 0.05)
    True
    """
    w = weights[:, None] if weights.ndim == 1 else weights
    kw = inducing_matvec(sk, ny.indices, w, block_size=block_size, devices=devices)
    n, s = sk.n, ny.rows.shape[0]
    v = projected_quadratic(ny, kw) + n / s * jnp.sum(w[ny.rows] ** 2 * ny.gap[:, None], axis=0)
    return v[0] if weights.ndim == 1 else v


def prefix_weights(n: int, prefixes: np.ndarray, dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """Weights (n, k) whose column p is :math:`1/m_p` on the first :math:`m_p` points and 0
    after: :func:`nystrom_squared` with them is :math:`\\hat V_{m_p}` of every prefix
    (:mod:`numpyro_dsd.mcmc.prefix`) in one pass.

    Examples
    --------
    >>> prefix_weights(4, np.array([2, 4]))
    Array([[0.5 , 0.25],
           [0.5 , 0.25],
           [0.  , 0.25],
           [0.  , 0.25]], dtype=float32)
    """
    m = np.asarray(prefixes)
    return jnp.asarray((np.arange(n)[:, None] < m[None, :]) / m[None, :], dtype=dtype)


def nystrom_row_means(
    sk: SteinKernel,
    ny: Nystrom,
    *,
    block_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> jax.Array:
    """The Nyström row means :math:`\\tilde h = n^{-1} K_{nm} K_{mm}^+ K_{mn}\\mathbf 1`, (n,):
    the projected Stein row means whose mean is :math:`\\hat V_{\\mathrm N}` (the series the
    sign process reads its memory from, :func:`numpyro_dsd.mcmc.bootstrap.memory_series`).

    Examples
    --------
    >>> from numpyro_dsd.stein.engine import prepare
    >>> x = jax.random.normal(jax.random.key(0), (60, 2))
    >>> sk = prepare(x, -x)
    >>> ny = nystrom(sk, jax.random.key(1), num_inducing=60)
    >>> bool(jnp.allclose(nystrom_row_means(sk, ny), sk.matrix().mean(1), rtol=1e-3, atol=1e-4))
    True
    """
    n = sk.n
    ones = jnp.full((n, 1), 1.0 / n, sk.diag.dtype)
    beta = inducing_matvec(sk, ny.indices, ones, devices=devices)
    v = jax.scipy.linalg.solve_triangular(ny.chol.T, _solve(ny, beta), lower=False)
    inducing = _rows(sk.feats, ny.indices)
    block = min(ROW_BLOCK if block_size is None else positive_int(block_size, "block_size"), n)
    return map_row_blocks(
        lambda f: sk.tile_fn(f, inducing, sk.consts) @ v[:, 0], sk.feats, n, block
    )
