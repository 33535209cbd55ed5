"""The diffusion Stein kernel and kernel Stein discrepancies (docs/math.md §2).

For a radial kernel :math:`k = \\varphi(r^\\top A r)`, :math:`r = x - y`, and a diffusion with
effective score :math:`b` (see :mod:`numpyro_dsd.stein.diffusion`), the Stein kernel is
(docs/math.md §2.3, §2.5, written with the profile derivatives)

.. math::
    k^0(x, y) = \\varphi\\, b_x^\\top b_y + 2\\varphi'\\,(M_x b_y - M_y b_x)^\\top A r
    - 4\\varphi''\\,(Ar)^\\top M_x M_y^\\top (Ar) - 2\\varphi'\\operatorname{tr}(M_x M_y^\\top A),

and :math:`\\mathrm{KSD}^2` is estimated by :math:`\\hat V = \\sum_{ij} w_i w_j k^0(x_i, x_j)`
(:math:`w_i = 1/n` unless weighted) or :math:`\\hat U = \\frac{1}{n(n-1)}\\sum_{i \\ne j} k^0`.

Evaluation is blocked (:mod:`numpyro_dsd.stein.tiling`): per-point features are computed once, and
each tile of pairs is a few matrix products plus elementwise work, :math:`O(B^2)` memory.
With a constant :math:`M` (identity included) a pair costs :math:`O(d)`; with a
position-dependent :math:`M(x)` it costs :math:`O(d^2)` (docs/math.md §8).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from numpyro_dsd._validation import (
    as_points,
    check_finite,
    check_overflow,
    check_pair,
    float_dtype,
    is_concrete,
    positive_int,
)
from numpyro_dsd.stein.diffusion import Diffusion, DiffusionFeatures, Identity
from numpyro_dsd.stein.kernels import IMQ, Gaussian, GaussianProfile, IMQProfile, default_kernel
from numpyro_dsd.stein.tiling import map_row_blocks

__all__ = [
    "SteinKernel",
    "checked_features",
    "from_features",
    "take_features",
    "stein_kernel_pair",
    "prepare",
    "langevin_kernel",
    "kernel_force",
]

Profile = IMQProfile | GaussianProfile
Statistic = Literal["v", "u"]
_DEFAULT_DIFFUSION = Identity()


def stein_kernel_pair(
    profile: Profile,
    A: jax.Array,
    x: jax.Array,
    y: jax.Array,
    bx: jax.Array,
    by: jax.Array,
    Mx: jax.Array,
    My: jax.Array,
) -> jax.Array:
    """The boxed formula of docs/math.md §2.3 for one pair, with closed-form kernel derivatives.

    Parameters
    ----------
    profile : IMQProfile or GaussianProfile
        ``kernel.profile``.
    A : (d, d)
        :math:`\\Gamma^{-1}` (``kernel.bandwidth_matrix(points)``).
    x, y : (d,)
        The pair.
    bx, by : (d,)
        Effective scores :math:`b = M^\\top s_p + \\nabla\\cdot M` at ``x`` and ``y``.
    Mx, My : (d, d)
        :math:`M(x)`, :math:`M(y)`.

    Returns
    -------
    Scalar :math:`k^0(x, y)`.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from numpyro_dsd import IMQ
    >>> I = jnp.eye(2)
    >>> x = jnp.zeros(2)
    >>> float(stein_kernel_pair(IMQ().profile, I, x, x, -x, -x, I, I))  # -2 beta tr(A) = 2
    2.0
    """
    r = x - y
    ar = A @ r
    phi, dphi, d2phi = profile(r @ ar)
    return (
        phi * bx @ by
        + 2.0 * dphi * (Mx @ by - My @ bx) @ ar
        - 4.0 * d2phi * ar @ Mx @ My.T @ ar
        - 2.0 * dphi * jnp.trace(Mx @ My.T @ A)
    )


# --- tile functions: (feats_I, feats_J, consts) -> (B_I, B_J) blocks of k0 -------------------


def _sqdist(a: jax.Array, sa: jax.Array, b: jax.Array, sb: jax.Array) -> jax.Array:
    """:math:`|a_i - b_j|^2` from one matrix product (inputs are centred: see ``prepare``)."""
    return jnp.maximum(sa[:, None] + sb[None, :] - 2.0 * (a @ b.T), 0.0)


class _LowRankFeatures(NamedTuple):
    z: jax.Array  # (n, d) L^T x, A = L L^T, so r^T A r = |z_i - z_j|^2
    sz: jax.Array  # (n,) |z|^2
    b: jax.Array  # (n, d) effective score M^T s
    zg: jax.Array  # (n, 2d) [z, g] with g = L^T M b
    gz_cat: jax.Array  # (n, 2d) [g, z]
    gz: jax.Array  # (n,) g . z
    y: jax.Array  # (n, d) M^T A x, so (Ar)^T M M^T (Ar) = |y_i - y_j|^2 (unused when isotropic)
    sy: jax.Array  # (n,) |y|^2


class _LowRankTile(NamedTuple):
    """Constant M: :math:`(g_y - g_x)^\\top(z_x - z_y)` is the drift term and the quadratic term
    is :math:`|y_x - y_y|^2` (or :math:`a\\,t` when :math:`M = I` and :math:`A = aI`)."""

    profile: Profile
    isotropic: bool

    def __call__(self, fi: _LowRankFeatures, fj: _LowRankFeatures, consts: tuple) -> jax.Array:
        return self.pieces(fi, fj, consts)[0]

    def pieces(
        self, fi: _LowRankFeatures, fj: _LowRankFeatures, consts: tuple
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """The block of :math:`k^0` and the kernel blocks :math:`K = \\varphi(t)`,
        :math:`D = \\varphi'(t)` it is made of (the SVGD force's pieces: :func:`kernel_force`)."""
        trace_mma, a = consts
        t = _sqdist(fi.z, fi.sz, fj.z, fj.sz)
        phi, dphi, d2phi = self.profile(t)
        cross = fi.zg @ fj.gz_cat.T - fi.gz[:, None] - fj.gz[None, :]
        quad = a * t if self.isotropic else _sqdist(fi.y, fi.sy, fj.y, fj.sy)
        k0 = phi * (fi.b @ fj.b.T) + 2.0 * dphi * (cross - trace_mma) - 4.0 * d2phi * quad
        return k0, phi, dphi


class _GeneralFeatures(NamedTuple):
    x: jax.Array  # (n, d) centred points
    ax: jax.Array  # (n, d) A x
    b: jax.Array  # (n, d)
    M: jax.Array  # (n, d, d)
    am: jax.Array  # (n, d*d) A M(x), flattened


class _GeneralTile(NamedTuple):
    """Position-dependent M: the pair terms need (B, B, d) intermediates; cost O(B^2 d^2)."""

    profile: Profile

    def __call__(self, fi: _GeneralFeatures, fj: _GeneralFeatures, consts: tuple) -> jax.Array:
        r = fi.x[:, None, :] - fj.x[None, :, :]
        ar = fi.ax[:, None, :] - fj.ax[None, :, :]
        phi, dphi, d2phi = self.profile(jnp.sum(r * ar, axis=-1))
        mb_xy = jnp.einsum("xij,yj->xyi", fi.M, fj.b)
        mb_yx = jnp.einsum("yij,xj->xyi", fj.M, fi.b)
        cross = jnp.sum((mb_xy - mb_yx) * ar, axis=-1)
        quad = jnp.sum(
            jnp.einsum("xij,xyi->xyj", fi.M, ar) * jnp.einsum("yij,xyi->xyj", fj.M, ar), axis=-1
        )
        trace_mma = fi.M.reshape(fi.M.shape[0], -1) @ fj.am.T
        return phi * (fi.b @ fj.b.T) + 2.0 * dphi * (cross - trace_mma) - 4.0 * d2phi * quad


class SteinKernel(NamedTuple):
    """A Stein kernel ready to evaluate on its points: per-point features, shared constants,
    the exact diagonal :math:`k^0(x_i, x_i)` (n,), and the tile function.

    Build it with :func:`prepare`; later stages (bootstrap, thinning, prefix curves) reuse it.
    """

    tile_fn: Callable[..., jax.Array]
    feats: NamedTuple
    consts: tuple
    diag: jax.Array
    settings: dict

    @property
    def n(self) -> int:
        return self.diag.shape[0]

    def matrix(self) -> jax.Array:
        """The (n, n) Gram matrix in one tile (small n only: O(n^2) memory)."""
        k = self.tile_fn(self.feats, self.feats, self.consts)
        return k.at[jnp.diag_indices(self.n)].set(self.diag)


def _lowrank(profile: Profile, isotropic: bool, f: DiffusionFeatures, A: jax.Array) -> SteinKernel:
    d = f.x.shape[1]
    x = f.x - jnp.mean(f.x, axis=0)
    if f.M is None and isotropic:
        a = A[0, 0]
        z, g, y = jnp.sqrt(a) * x, jnp.sqrt(a) * f.b, x[:, :0]
        trace_mma = a * d
    else:
        M = jnp.eye(d, dtype=x.dtype) if f.M is None else f.M
        L = jnp.linalg.cholesky(A)
        z, g, y = x @ L, f.b @ M.T @ L, x @ A @ M
        trace_mma, a = jnp.sum(M * (A @ M)), jnp.zeros((), x.dtype)  # a: isotropic case only
    feats = _LowRankFeatures(
        z,
        jnp.sum(z * z, axis=1),
        f.b,
        jnp.concatenate([z, g], axis=1),
        jnp.concatenate([g, z], axis=1),
        jnp.sum(g * z, axis=1),
        y,
        jnp.sum(y * y, axis=1),
    )
    phi0, dphi0, _ = profile(jnp.zeros((), x.dtype))
    diag = phi0 * jnp.sum(f.b**2, axis=1) - 2.0 * dphi0 * trace_mma
    tile = _LowRankTile(profile, bool(f.M is None and isotropic))
    return SteinKernel(tile, feats, (trace_mma, a), diag, {})


def _general(profile: Profile, f: DiffusionFeatures, A: jax.Array) -> SteinKernel:
    x = f.x - jnp.mean(f.x, axis=0)
    am = jnp.einsum("ij,njk->nik", A, f.M)
    feats = _GeneralFeatures(x, x @ A, f.b, f.M, am.reshape(am.shape[0], -1))
    phi0, dphi0, _ = profile(jnp.zeros((), x.dtype))
    diag = phi0 * jnp.sum(f.b**2, axis=1) - 2.0 * dphi0 * jnp.sum(f.M * am, axis=(1, 2))
    return SteinKernel(_GeneralTile(profile), feats, (), diag, {})


def prepare(
    x: ArrayLike,
    scores: ArrayLike | None = None,
    *,
    log_prob: Callable[[jax.Array], jax.Array] | None = None,
    kernel: IMQ | Gaussian | None = None,
    diffusion: Diffusion | None = None,
) -> SteinKernel:
    """Validate inputs and build the :class:`SteinKernel` of ``x``.

    Scores come from ``scores`` (n, d) or from ``jax.vmap(jax.grad(log_prob))(x)``. The
    diffusion maps (x, scores) to (points, effective scores, M); the kernel's bandwidth is
    resolved on those points. Features are then computed once per point.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> sk = prepare(jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [-1.0]]))
    >>> sk.matrix().shape
    (2, 2)
    """
    diffusion = _DEFAULT_DIFFUSION if diffusion is None else diffusion
    f = checked_features(diffusion, *_points_and_scores(x, scores, log_prob))
    return from_features(f, kernel, diffusion.settings())


def checked_features(diffusion: Diffusion, x: jax.Array, scores: jax.Array) -> DiffusionFeatures:
    """``diffusion.features(x, scores)`` for validated (n, d) arrays, with a clear error where
    the effective score or a per-point :math:`M(x)` is not finite."""
    f = diffusion.features(x, scores)
    hint = (
        f"Check the diffusion {diffusion!r}: it is not finite there, or the finite x and "
        "scores overflow the float dtype in it (rescale the data or enable float64)."
    )
    check_finite(f.b, "the effective score M^T s + div M", hint)
    if f.M is not None and f.M.ndim == 3:
        check_finite(f.M, "M(x)", f"Check the diffusion {diffusion!r}.")
    return f


def from_features(
    f: DiffusionFeatures,
    kernel: IMQ | Gaussian | None = None,
    settings: dict | None = None,
) -> SteinKernel:
    """The :class:`SteinKernel` of diffusion features already computed (checked, finite).

    :func:`prepare` is ``diffusion.features`` followed by this. Callers that evaluate several
    subsets of one set of draws (the diagnostic: each chain and the pooled draws) compute the
    features once and slice them (:func:`take_features`).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from numpyro_dsd.stein.diffusion import Identity
    >>> x = jnp.array([[0.0], [1.0], [2.0]])
    >>> f = Identity().features(x, -x)
    >>> bool(jnp.allclose(from_features(f).matrix(), prepare(x, -x).matrix()))
    True
    """
    kernel = default_kernel() if kernel is None else kernel
    _check_profile(kernel, f.x.dtype)
    A = kernel.bandwidth_matrix(f.x)
    if f.M is not None and f.M.ndim == 3:
        sk = _general(kernel.profile, f, A)
    else:
        sk = _lowrank(kernel.profile, kernel.isotropic, f, A)
    _check_diagonal(sk.diag)
    return sk._replace(settings={**kernel.settings(), **(settings or {})})


def _check_profile(kernel: IMQ | Gaussian, dtype: jnp.dtype) -> None:
    """The profile at distance 0 must have a finite positive value and a finite negative slope
    in ``dtype`` (IMQ's :math:`c^2` can under- or overflow float32)."""
    with jax.ensure_compile_time_eval():  # concrete under jit too: no tracer involved
        phi0, dphi0, _ = (float(v) for v in kernel.profile(jnp.zeros((), dtype)))
    if not (np.isfinite(phi0) and np.isfinite(dphi0) and phi0 > 0 and dphi0 < 0):
        raise ValueError(
            f"The kernel {kernel!r} is degenerate in {np.dtype(dtype)}: at distance 0 its value "
            f"is {phi0:.3g} and its slope {dphi0:.3g} (c**2 under- or overflows). Choose c "
            "nearer 1; the bandwidth, not c, sets the kernel's length scale."
        )


def _check_diagonal(diag: jax.Array) -> None:
    """The exact diagonal :math:`k^0(x_i, x_i) = \\varphi(0)|b_i|^2
    - 2\\varphi'(0)\\operatorname{tr}(M_i M_i^\\top A)` is positive for an invertible
    :math:`M(x_i)` and an SPD :math:`A`: a non-finite one overflowed, a zero one is a degenerate
    kernel or diffusion that would report a perfect fit."""
    check_overflow(diag, "The Stein kernel k0(x, x) of x and scores")
    if not is_concrete(diag):
        return
    zero = np.asarray(diag) <= 0
    if zero.any():
        raise ValueError(
            f"The Stein kernel k0(x, x) is zero at {int(zero.sum())} of {zero.size} points (first "
            f"at row {int(np.argmax(zero))}): the diffusion's M(x) vanishes there or the kernel's "
            f"bandwidth is degenerate in {diag.dtype}. Check the diffusion and the kernel; a KSD "
            "from them would report a perfect fit."
        )


def take_features(f: DiffusionFeatures, rows: slice | jax.Array) -> DiffusionFeatures:
    """The features of the points ``rows`` (a per-point ``M`` is sliced, a constant one kept).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from numpyro_dsd.stein.diffusion import Identity
    >>> x = jnp.arange(6.0).reshape(3, 2)
    >>> take_features(Identity().features(x, -x), slice(0, 2)).x.shape
    (2, 2)
    """
    M = f.M[rows] if f.M is not None and f.M.ndim == 3 else f.M
    return DiffusionFeatures(f.x[rows], f.b[rows], M)


def _points_and_scores(
    x: ArrayLike, scores: ArrayLike | None, log_prob: Callable | None
) -> tuple[jax.Array, jax.Array]:
    if (scores is None) == (log_prob is None):
        raise ValueError(
            "Give exactly one of scores (an (n, d) array of grad log p at x) and log_prob "
            "(a callable log density of one (d,) point)."
        )
    if scores is None:
        dtype = float_dtype(x, names=("x",))
    else:
        dtype = float_dtype(x, scores, names=("x", "scores"))
    x = as_points(x, dtype=dtype)
    if scores is None:
        s = jax.jit(jax.vmap(jax.grad(log_prob)))(x)
        check_finite(s, "scores computed from log_prob", "log_prob's gradient is not finite there.")
        return x, s
    return x, check_pair(x, scores, dtype)


#: Rows of the force's kernel blocks formed at once (:func:`kernel_force`).
FORCE_ROW_BLOCK = 1024


class _ForceRows(NamedTuple):
    """Per-point inputs of a row block of :func:`kernel_force`."""

    feats: _LowRankFeatures
    ax: jax.Array  # (n, d) A x, x centred
    diag: jax.Array  # (n,) exact k0(x_i, x_i)
    index: jax.Array  # (n,) the row's index


def langevin_kernel(
    x: jax.Array, scores: jax.Array, A: jax.Array, profile: Profile, isotropic: bool = False
) -> SteinKernel:
    """The identity-diffusion (Langevin) :class:`SteinKernel` of ``x`` with a given :math:`A`:
    no validation and no bandwidth heuristic, so it is jittable (SVGD's inner loop).

    Parameters
    ----------
    x, scores : (n, d)
        Points and :math:`s = \\nabla\\log p(x)`.
    A : (d, d)
        :math:`\\Gamma^{-1}` of the kernel :math:`\\varphi((x-y)^\\top A(x-y))`.
    profile : IMQProfile or GaussianProfile
        ``kernel.profile``.
    isotropic : bool
        :math:`A = aI` (only ``A[0, 0]`` is read): no Cholesky factor, cheaper tiles.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from numpyro_dsd import IMQ
    >>> x = jnp.array([[0.0], [1.0]])
    >>> sk = langevin_kernel(x, -x, jnp.eye(1), IMQ().profile)
    >>> bool(jnp.allclose(sk.matrix(), prepare(x, -x).matrix()))
    True
    """
    return _lowrank(profile, isotropic, DiffusionFeatures(x, scores, None), A)


def kernel_force(
    x: ArrayLike,
    scores: ArrayLike,
    A: ArrayLike,
    profile: Profile,
    *,
    isotropic: bool = False,
    block_size: int = FORCE_ROW_BLOCK,
) -> tuple[jax.Array, jax.Array]:
    """The SVGD force of the kernel :math:`k = \\varphi((x-y)^\\top A(x-y))` and the KSD²
    V-statistic of the points, from one :func:`langevin_kernel` (the features
    :func:`~numpyro_dsd.stein.ksd_squared` sums).

    .. math::
        \\Phi = \\tfrac1n\\big[K S + 2(DX - \\mathrm{diag}(D\\mathbf 1)X)A\\big],\\qquad
        \\hat V = \\tfrac1{n^2}\\mathbf 1^\\top K^0\\mathbf 1,

    :math:`K_{ij} = \\varphi(t_{ij})`, :math:`D_{ij} = \\varphi'(t_{ij})`,
    :math:`t_{ij} = (x_i - x_j)^\\top A(x_i - x_j)` and :math:`K^0` the identity-diffusion Stein
    kernel, all three from one tile (``_LowRankTile.pieces``) per block of ``block_size`` rows
    against all n points (:func:`~numpyro_dsd.stein.tiling.map_row_blocks`): memory
    :math:`O(B\\,n)`, time :math:`O(n^2 d)`, no per-pair derivative and no ``(n, n, d)`` array.
    Row i of :math:`\\Phi` is :math:`\\frac1n\\sum_j[k(x_j, x_i)s_j + \\nabla_1k(x_j, x_i)]`.

    Parameters
    ----------
    x, scores : (n, d)
        Points and :math:`S`, the scores :math:`\\nabla\\log p` at them.
    A : (d, d)
        The kernel's :math:`A`.
    profile : IMQProfile or GaussianProfile
        ``kernel.profile``.
    isotropic : bool
        :math:`A = aI` (only ``A[0, 0]`` is read).
    block_size : int
        Rows formed at once.

    Returns
    -------
    force : (n, d)
        :math:`\\Phi`.
    ksd_squared : scalar
        :math:`\\hat V`.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from numpyro_dsd import IMQ, ksd_squared
    >>> x = jnp.array([[0.0], [1.0], [3.0]])
    >>> phi, v = kernel_force(x, -x, jnp.eye(1), IMQ().profile, isotropic=True)
    >>> phi.shape, bool(jnp.isclose(v, ksd_squared(x, -x, kernel=IMQ())))
    ((3, 1), True)
    """
    block_size = positive_int(block_size, "block_size")
    x, s = jnp.asarray(x), jnp.asarray(scores)
    A = jnp.asarray(A, dtype=x.dtype)
    n = x.shape[0]
    sk = langevin_kernel(x, s, A, profile, isotropic)
    xc = x - jnp.mean(x, axis=0)  # as _lowrank centres: translation invariant, accurate t
    ax = A[0, 0] * xc if isotropic else xc @ A
    cols = jnp.arange(n)

    def rows(r: _ForceRows) -> tuple[jax.Array, jax.Array]:
        k0, phi, dphi = sk.tile_fn.pieces(r.feats, sk.feats, sk.consts)
        k0 = jnp.where(r.index[:, None] == cols[None, :], r.diag[:, None], k0)
        force = phi @ s + 2.0 * (dphi @ ax - jnp.sum(dphi, axis=1)[:, None] * r.ax)
        return force, jnp.sum(k0, axis=1)

    force, v_rows = map_row_blocks(rows, _ForceRows(sk.feats, ax, sk.diag, cols), n, block_size)
    return force / n, jnp.sum(v_rows) / n**2


def tile_size(sk: SteinKernel, block_size: int | None = None) -> int:
    """The tile size B for ``sk``: ``block_size``, or the sweep's best (benchmarks/block_size.py,
    docs/benchmarks.md: 512 for constant M, 128 for position-dependent M), capped near n."""
    default = 128 if isinstance(sk.tile_fn, _GeneralTile) else 512
    block = default if block_size is None else positive_int(block_size, "block_size")
    return min(block, -(-sk.n // 8) * 8)


def local_devices(devices: Sequence[jax.Device] | None = None) -> tuple[jax.Device, ...]:
    """The devices the tiles of pairs are split over: ``devices``, or by default every device
    the computation can use: this process's (:func:`jax.local_devices`) in one process, and all
    processes' (:func:`jax.devices`) under multi-controller JAX (``jax.distributed``), where
    every process calls the same function and gets the same replicated value (docs/scale.md).

    Parameters
    ----------
    devices : sequence of jax.Device, optional
        The caller's choice, kept as given.

    Returns
    -------
    tuple of jax.Device

    Examples
    --------
    >>> local_devices() == tuple(jax.local_devices())  # one process
    True
    """
    if devices is not None:
        return tuple(devices)
    return tuple(jax.devices() if jax.process_count() > 1 else jax.local_devices())
