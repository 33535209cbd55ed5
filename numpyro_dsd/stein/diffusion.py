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

from numpyro_dsd._validation import is_concrete, square_matrix

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
        Invertible matrix (need not be symmetric). A singular one raises ``ValueError``: its
        KSD cannot see any discrepancy along the null space (``M = 0`` gives 0 for any draws).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from numpyro_dsd import Constant, ksd
    >>> x = jnp.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
    >>> float(ksd(x, -x, diffusion=Constant(2 * jnp.eye(2)))) > 0
    True
    """

    def __init__(self, M: ArrayLike):
        square_matrix(M, "Constant(M): M")
        if is_concrete(M):
            rank = int(np.linalg.matrix_rank(np.asarray(M)))
            if rank < np.shape(M)[0]:
                raise ValueError(_singular_message("Constant(M): M", rank, np.shape(M)[0]))
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
            raise TypeError(
                "PositionDependent(fn) needs a callable mapping a (d,) point to (d, d)."
            )
        self.fn = fn
        self._batched = jax.jit(jax.vmap(self.matrix_and_divergence))

    def __getstate__(self) -> dict[str, object]:
        """Pickle ``fn`` only (a module-level function pickles; a lambda does not)."""
        return {"fn": self.fn}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(state["fn"])  # type: ignore[misc]

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
        self._check_invertible(Ms)
        return DiffusionFeatures(x, jnp.einsum("nij,ni->nj", Ms, scores) + div, Ms)

    def _check_invertible(self, Ms: jax.Array) -> None:
        """``ValueError`` where a finite :math:`M(x_i)` is singular (concrete only; non-finite
        ones are reported with the effective score): the KSD cannot see a discrepancy along its
        null space. Costs O(n d^3), below the pairs' O(n^2 d^2) for n >= d."""
        if not is_concrete(Ms):
            return
        d, m = Ms.shape[-1], np.asarray(Ms)
        finite = np.isfinite(m).all(axis=(1, 2))
        rank = np.full(finite.shape, d)
        if finite.any():
            rank[finite] = np.linalg.matrix_rank(m[finite])
        singular = rank < d
        if singular.any():
            row = int(np.argmax(singular))
            where = f"at {int(singular.sum())} of {singular.size} points (first at row {row})"
            raise ValueError(_singular_message(f"PositionDependent: M(x) {where}", rank[row], d))

    def settings(self) -> dict[str, object]:
        return {"diffusion": f"PositionDependent({getattr(self.fn, '__name__', 'fn')})"}

    def __repr__(self) -> str:
        return f"PositionDependent({getattr(self.fn, '__name__', self.fn)!r})"


def _singular_message(what: str, rank: int, d: int) -> str:
    return (
        f"{what} is singular (rank {int(rank)} of {d}); the diffusion KSD needs an invertible "
        "M, else it cannot see any discrepancy along M's null space (M = 0 reports a perfect fit "
        "for any draws)."
    )
