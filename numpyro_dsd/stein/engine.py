"""The diffusion Stein kernel and kernel Stein discrepancies (math.md §2).

For a radial kernel :math:`k = \\varphi(r^\\top A r)`, :math:`r = x - y`, and a diffusion with
effective score :math:`b` (see :mod:`numpyro_dsd.stein.diffusion`), the Stein kernel is (math.md §2.3,
§2.5, written with the profile derivatives)

.. math::
    k^0(x, y) = \\varphi\\, b_x^\\top b_y + 2\\varphi'\\,(M_x b_y - M_y b_x)^\\top A r
    - 4\\varphi''\\,(Ar)^\\top M_x M_y^\\top (Ar) - 2\\varphi'\\operatorname{tr}(M_x M_y^\\top A),

and :math:`\\mathrm{KSD}^2` is estimated by :math:`\\hat V = \\sum_{ij} w_i w_j k^0(x_i, x_j)`
(:math:`w_i = 1/n` unless weighted) or :math:`\\hat U = \\frac{1}{n(n-1)}\\sum_{i \\ne j} k^0`.

Evaluation is blocked (:mod:`numpyro_dsd.stein.tiling`): per-point features are computed once, and
each tile of pairs is a few matrix products plus elementwise work, :math:`O(B^2)` memory.
With a constant :math:`M` (identity included) a pair costs :math:`O(d)`; with a
position-dependent :math:`M(x)` it costs :math:`O(d^2)` (math.md §8).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from numpyro_dsd._validation import as_points, check_finite, check_pair, float_dtype
from numpyro_dsd.stein.diffusion import Diffusion, DiffusionFeatures, Identity
from numpyro_dsd.stein.kernels import IMQ, Gaussian, GaussianProfile, IMQProfile

__all__ = [
    "SteinKernel",
    "stein_kernel_pair",
    "prepare",
]

Profile = IMQProfile | GaussianProfile
Statistic = Literal["v", "u"]
_DEFAULT_KERNEL = IMQ()
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
    """The boxed formula of math.md §2.3 for one pair, with the closed-form kernel derivatives.

    Parameters
    ----------
    profile : IMQProfile or GaussianProfile
        ``kernel.profile``.
    A : (d, d)
        :math:`\\Gamma^{-1}` (``kernel.precondition_matrix(points)``).
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
        trace_mma, a = consts
        t = _sqdist(fi.z, fi.sz, fj.z, fj.sz)
        phi, dphi, d2phi = self.profile(t)
        cross = fi.zg @ fj.gz_cat.T - fi.gz[:, None] - fj.gz[None, :]
        quad = a * t if self.isotropic else _sqdist(fi.y, fi.sy, fj.y, fj.sy)
        return phi * (fi.b @ fj.b.T) + 2.0 * dphi * (cross - trace_mma) - 4.0 * d2phi * quad


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
    diffusion maps (x, scores) to (points, effective scores, M); the kernel's preconditioner is
    resolved on those points. Features are then computed once per point.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> sk = prepare(jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [-1.0]]))
    >>> sk.matrix().shape
    (2, 2)
    """
    kernel = _DEFAULT_KERNEL if kernel is None else kernel
    diffusion = _DEFAULT_DIFFUSION if diffusion is None else diffusion
    x, s = _points_and_scores(x, scores, log_prob)
    f = diffusion.features(x, s)
    check_finite(f.b, "the effective score M^T s + div M", f"Check the diffusion {diffusion!r}.")
    if f.M is not None and f.M.ndim == 3:
        check_finite(f.M, "M(x)", f"Check the diffusion {diffusion!r}.")
    A = kernel.precondition_matrix(f.x)
    if f.M is not None and f.M.ndim == 3:
        sk = _general(kernel.profile, f, A)
    else:
        sk = _lowrank(kernel.profile, kernel.isotropic, f, A)
    return sk._replace(settings={**kernel.settings(), **diffusion.settings()})


def _points_and_scores(
    x: ArrayLike, scores: ArrayLike | None, log_prob: Callable | None
) -> tuple[jax.Array, jax.Array]:
    if (scores is None) == (log_prob is None):
        raise ValueError(
            "Give exactly one of scores (an (n, d) array of grad log p at x) and log_prob "
            "(a callable log density of one (d,) point)."
        )
    dtype = float_dtype(x) if scores is None else float_dtype(x, scores)
    x = as_points(x, dtype=dtype)
    if scores is None:
        s = jax.jit(jax.vmap(jax.grad(log_prob)))(x)
        check_finite(s, "scores computed from log_prob", "log_prob's gradient is not finite there.")
        return x, s
    return x, check_pair(x, scores, dtype)


def tile_size(sk: SteinKernel, block_size: int | None = None) -> int:
    """The tile size B for ``sk``: ``block_size``, or the sweep's best (benchmarks/block_size.py,
    docs/benchmarks.md: 512 for constant M, 128 for position-dependent M), capped near n."""
    if block_size is not None and block_size < 1:
        raise ValueError(f"block_size must be a positive integer; got {block_size}.")
    default = 128 if isinstance(sk.tile_fn, _GeneralTile) else 512
    return min(block_size or default, -(-sk.n // 8) * 8)


def local_devices(devices: Sequence[jax.Device] | None) -> tuple[jax.Device, ...]:
    return tuple(jax.local_devices() if devices is None else devices)
