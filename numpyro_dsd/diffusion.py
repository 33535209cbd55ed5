"""Diffusion matrices M(x) for the diffusion Stein operator (math.md §1.2, §2.3, §2.4).

The diffusion Stein operator is :math:`\\mathcal A_{p,M} f = p^{-1}\\nabla\\cdot(pMf)
= b^\\top f + \\operatorname{tr}(M\\nabla f)` with the *effective score*

.. math:: b_{p,M}(x) = M(x)^\\top s_p(x) + (\\nabla\\cdot M)(x),
    \\qquad (\\nabla\\cdot M)_j = \\sum_i \\partial_{x_i} M_{ij}.

A diffusion object has one job: turn points and scores into :class:`DiffusionFeatures`, the
per-point quantities the Stein kernel needs (computed once per point, never per pair).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from numpyro_dsd._validation import check_finite, is_concrete
from numpyro_dsd.bijections import (
    NotInvertibleError,
    as_bijection,
    check_flow_dim,
    inverse,
    latent_score,
)

__all__ = [
    "DiffusionFeatures",
    "Diffusion",
    "Identity",
    "Constant",
    "PositionDependent",
    "FlowDiffusion",
]


class DiffusionFeatures(NamedTuple):
    """Per-point inputs of the diffusion Stein kernel.

    Attributes
    ----------
    x : (n, d)
        Points the base kernel is evaluated on.
    b : (n, d)
        Effective scores :math:`b = M^\\top s_p + \\nabla\\cdot M`.
    M : None, (d, d) or (n, d, d)
        The diffusion matrix: ``None`` for the identity, one matrix when constant, one per point.
    """

    x: jax.Array
    b: jax.Array
    M: jax.Array | None


class Diffusion(Protocol):
    """What :func:`numpyro_dsd.ksd` needs of a diffusion."""

    def features(self, x: jax.Array, scores: jax.Array) -> DiffusionFeatures:
        """Per-point features from points ``x`` (n, d) and target scores ``scores`` (n, d)."""
        ...

    def settings(self) -> dict[str, object]:
        """Plain-value description for result attributes."""
        ...


class Identity:
    """:math:`M = I`: the Langevin Stein operator and the plain KSD (math.md §2.2).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from numpyro_dsd import Identity, ksd
    >>> x = jnp.array([[0.0], [1.0]])
    >>> ksd(x, -x, diffusion=Identity()) > 0
    Array(True, dtype=bool)
    """

    def features(self, x: jax.Array, scores: jax.Array) -> DiffusionFeatures:
        """Return ``(x, scores, None)``."""
        return DiffusionFeatures(x, scores, None)

    def settings(self) -> dict[str, object]:
        return {"diffusion": "Identity"}

    def __repr__(self) -> str:
        return "Identity()"


class Constant:
    """Constant diffusion matrix :math:`M` (d, d): :math:`b = M^\\top s_p` (math.md §2.4).

    The Stein kernel depends on :math:`M` only through :math:`MM^\\top`; it is the Langevin KSD
    of the linearly transformed samples :math:`M^{-1}x` (math.md §3.7).

    Parameters
    ----------
    M : array (d, d)
        Invertible matrix (need not be symmetric).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from numpyro_dsd import Constant, ksd
    >>> x = jnp.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
    >>> float(ksd(x, -x, diffusion=Constant(2 * jnp.eye(2)))) > 0
    True
    """

    def __init__(self, M: ArrayLike):
        shape = np.shape(M)
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(f"Constant(M) needs a square (d, d) matrix; got shape {shape}.")
        if not isinstance(M, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(M))):
            raise ValueError("Constant(M): M contains NaN or inf.")
        self.M = M

    def features(self, x: jax.Array, scores: jax.Array) -> DiffusionFeatures:
        """Return ``(x, scores @ M, M)``, i.e. :math:`b_i = M^\\top s_i`."""
        M = jnp.asarray(self.M, dtype=x.dtype)
        if M.shape[0] != x.shape[1]:
            raise ValueError(
                f"Constant(M) has M of shape {M.shape} but the points have d={x.shape[1]}."
            )
        return DiffusionFeatures(x, scores @ M, M)

    def settings(self) -> dict[str, object]:
        return {"diffusion": "Constant"}

    def __repr__(self) -> str:
        return f"Constant(<matrix {np.shape(self.M)}>)"


class PositionDependent:
    """Position-dependent diffusion :math:`M(x)`, given as a function of one point.

    The divergence :math:`\\nabla\\cdot M` (row index, math.md §0) comes from one forward-mode
    Jacobian per point, computed together with :math:`M(x)`; the pair cost is then
    :math:`O(d^2)` (math.md §8).

    Parameters
    ----------
    fn : callable (d,) -> (d, d)
        :math:`x \\mapsto M(x)`, differentiable with JAX.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from numpyro_dsd import PositionDependent, ksd
    >>> diff = PositionDependent(lambda x: (1.0 + x @ x) ** 0.5 * jnp.eye(x.shape[0]))
    >>> x = jnp.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
    >>> float(ksd(x, -x, diffusion=diff)) > 0
    True
    """

    def __init__(self, fn: Callable[[jax.Array], jax.Array]):
        if not callable(fn):
            raise ValueError(
                "PositionDependent(fn) needs a callable mapping a (d,) point to (d, d)."
            )
        self.fn = fn
        self._batched = jax.jit(jax.vmap(self.matrix_and_divergence))

    def matrix_and_divergence(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """:math:`M(x)` (d, d) and :math:`(\\nabla\\cdot M)(x)` (d,) for one point ``x`` (d,)."""
        jac, M = jax.jacfwd(lambda p: (self.fn(p), self.fn(p)), has_aux=True)(x)
        return M, jnp.einsum("iji->j", jac)

    def features(self, x: jax.Array, scores: jax.Array) -> DiffusionFeatures:
        """Return ``(x, M(x)^T s + div M, M(x))`` with ``M`` of shape (n, d, d)."""
        d = x.shape[1]
        out = jax.eval_shape(self.fn, jax.ShapeDtypeStruct((d,), x.dtype))
        if out.shape != (d, d):
            raise ValueError(
                f"PositionDependent: fn must map a ({d},) point to a ({d}, {d}) matrix; "
                f"it returned shape {out.shape}."
            )
        Ms, div = self._batched(x)
        return DiffusionFeatures(x, jnp.einsum("nij,ni->nj", Ms, scores) + div, Ms)

    def settings(self) -> dict[str, object]:
        return {"diffusion": f"PositionDependent({getattr(self.fn, '__name__', 'fn')})"}

    def __repr__(self) -> str:
        return f"PositionDependent({getattr(self.fn, '__name__', self.fn)!r})"


class FlowDiffusion:
    """Flow diffusion :math:`M(x) = J(x)^{-1}`, :math:`J = \\partial z/\\partial x`, with the
    kernel :math:`k_z(T(x), T(y))` (math.md §3).

    By Theorem 3.5 this diffusion KSD equals the plain (Langevin) KSD of the latent points
    :math:`z_i = T(x_i)` against the pushed-forward target :math:`T_\\#p`, whose score is
    (Lemma 3.1)

    .. math:: s_{T_\\#p}(T(x)) = J(x)^{-\\top}\\big(s_p(x) - \\nabla_x\\log|\\det J(x)|\\big)
        = \\nabla G(z)^\\top s_p(x) + \\nabla_z \\log|\\det\\nabla G(z)|,\\quad z = T(x).

    So the features are computed the cheap way (math.md §3.8): map each point to latent space,
    form its latent score, and apply the plain Stein kernel there, :math:`O(n^2 d)` for the pairs.
    The kernel's preconditioner (e.g. ``"med"``) is estimated on the latent points.

    ``FlowDiffusion(T)`` takes the data-to-latent map :math:`T` and uses the right-hand form
    with :math:`J` from ``jax.jacfwd`` and a linear solve (:math:`O(d^3)` per point; no inverse
    needed, so a BNAF works). ``FlowDiffusion.from_generator(G)`` takes the latent-to-data map
    :math:`G = T^{-1}` (e.g. ``guide.get_transform(params)`` of a fitted ``AutoIAFNormal``),
    computes :math:`z = G^{-1}(x)` and the second form with one vector-Jacobian product of
    :math:`G`; it checks :math:`G(z) = x` to catch flows that are not invertible there.

    Parameters
    ----------
    T : NumPyro ``Transform`` or bijection
        Data to latent, acting on (d,) points. Any object with ``transform_and_log_det`` and
        ``inverse_and_log_det`` (a flowjax bijection, :class:`numpyro_dsd.bijections.Inverse`,
        :class:`numpyro_dsd.ContinuousFlow`) is accepted.
    batch_size : int, optional
        Points mapped at once (vectorised) in the sequential loop over the points; default
        :math:`2^{22}/d^2` (the per-point Jacobians of a batch take 4M numbers), at least 256.
        Small batches are slow on CPU: at n = 20,000, d = 10, batches of 256 took 1.27 s, one
        batch 0.02 s.

    Examples
    --------
    An affine flow :math:`T(x) = Ax` is the constant diffusion :math:`M = A^{-1}` (math.md §3.7):

    >>> import jax.numpy as jnp
    >>> from numpyro.distributions.transforms import AffineTransform
    >>> from numpyro_dsd import FlowDiffusion, ksd
    >>> x = jnp.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
    >>> flow = FlowDiffusion(AffineTransform(0.0, jnp.array([2.0, 0.5])))
    >>> float(ksd(x, -x, diffusion=flow)) > 0
    True
    """

    def __init__(self, T: object, *, batch_size: int | None = None):
        self.bijection = as_bijection(T)
        self.batch_size = batch_size
        self.method = "jacobian"
        self._latent = self._compile(self._latent_by_jacobian)

    @classmethod
    def from_generator(cls, G: object, *, batch_size: int | None = None) -> FlowDiffusion:
        """The flow diffusion of :math:`T = G^{-1}`, for a generator :math:`G` (latent to data).

        Examples
        --------
        >>> import jax.numpy as jnp
        >>> from numpyro.distributions.transforms import AffineTransform
        >>> G = AffineTransform(1.0, 3.0)
        >>> flow = FlowDiffusion.from_generator(G)
        >>> z, s_z = flow.latent(jnp.array([[4.0]]), jnp.array([[-1.0]]))
        >>> z, s_z
        (Array([[1.]], dtype=float32), Array([[-3.]], dtype=float32))
        """
        self = cls(inverse(G), batch_size=batch_size)
        self.method = "generator"
        self._latent = self._compile(self._latent_by_generator)
        return self

    def _compile(self, point_fn: Callable) -> Callable:
        def run(x: jax.Array, s: jax.Array) -> tuple[jax.Array, ...]:
            n, d = x.shape
            batch = self.batch_size or max(256, 2**22 // (d * d))
            if batch >= n:
                return jax.vmap(point_fn)(x, s)
            return jax.lax.map(lambda a: point_fn(*a), (x, s), batch_size=batch)

        return jax.jit(run)

    def _latent_by_jacobian(self, x: jax.Array, s: jax.Array) -> tuple[jax.Array, ...]:
        """:math:`J^{-\\top}(s - \\nabla\\log|\\det J|)`; both derivatives from one ``jacfwd``."""
        fwd = self.bijection.transform_and_log_det
        (J, grad_logdet), (z, _) = jax.jacfwd(lambda p: (fwd(p), fwd(p)), has_aux=True)(x)
        s_z = jnp.linalg.solve(J.T, s - grad_logdet)
        return z.astype(x.dtype), s_z.astype(x.dtype), jnp.zeros((), x.dtype)

    def _latent_by_generator(self, x: jax.Array, s: jax.Array) -> tuple[jax.Array, ...]:
        """:math:`\\nabla G(z)^\\top s + \\nabla_z\\log|\\det\\nabla G(z)|` by one VJP of G."""
        z, _ = self.bijection.transform_and_log_det(x)
        x_back, s_z = latent_score(self.bijection, z, lambda _: s)
        round_trip = jnp.max(jnp.abs(x_back - x) / (1.0 + jnp.abs(x)))
        return z.astype(x.dtype), s_z.astype(x.dtype), round_trip.astype(x.dtype)

    def latent(self, x: jax.Array, scores: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Latent points :math:`z_i = T(x_i)` (n, d) and scores :math:`s_{T_\\#p}(z_i)` (n, d)."""
        check_flow_dim(self.bijection, x.shape[1], x.dtype)
        z, s_z, round_trip = self._latent(x, scores)
        check_finite(z, "The flow's latent points T(x)", "Check the flow at those draws.")
        check_finite(
            s_z,
            "The latent score J^{-T}(s - grad log|det J|)",
            "The flow's Jacobian is singular or not finite there; refit the flow or drop "
            "those draws.",
        )
        self._check_round_trip(round_trip)
        return z, s_z

    def _check_round_trip(self, round_trip: jax.Array) -> None:
        if not is_concrete(round_trip):
            return
        err = np.asarray(round_trip)
        tol = 10.0 * float(np.sqrt(np.finfo(err.dtype).eps))
        if err.max() > tol:
            raise NotInvertibleError(
                f"The flow is not invertible at {int((err > tol).sum())} of {err.size} draws: "
                f"G(G^-1(x)) differs from x by up to {err.max():.2g} (relative; first at row "
                f"{int(np.argmax(err > tol))}). The generator's inverse is inexact there (e.g. "
                "IAF log-scale clipping, or draws outside the flow's range); refit the flow or "
                "use FlowDiffusion(T) with the data-to-latent map."
            )

    def features(self, x: jax.Array, scores: jax.Array) -> DiffusionFeatures:
        """Return ``(z, s_z, None)``: the plain Stein kernel in latent space (Theorem 3.5)."""
        z, s_z = self.latent(x, scores)
        return DiffusionFeatures(z, s_z, None)

    def settings(self) -> dict[str, object]:
        return {"diffusion": f"FlowDiffusion({self.bijection!r}, method={self.method!r})"}

    def __repr__(self) -> str:
        return f"FlowDiffusion({self.bijection!r})"
