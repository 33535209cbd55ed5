"""Diffusion matrices M(x) for the diffusion Stein operator (docs/math.md §1.2, §2.3, §2.4).

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

__all__ = [
    "DiffusionFeatures",
    "Diffusion",
    "Identity",
    "Constant",
    "PositionDependent",
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
    """:math:`M = I`: the Langevin Stein operator and the plain KSD (docs/math.md §2.2).

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
    """Constant diffusion matrix :math:`M` (d, d): :math:`b = M^\\top s_p` (docs/math.md §2.4).

    The Stein kernel depends on :math:`M` only through :math:`MM^\\top`; it is the Langevin KSD
    of the linearly transformed samples :math:`M^{-1}x` (docs/math.md §3.7).

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

    The divergence :math:`\\nabla\\cdot M` (row index, docs/math.md §0) comes from one forward-mode
    Jacobian per point, computed together with :math:`M(x)`; the pair cost is then
    :math:`O(d^2)` (docs/math.md §8).

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
