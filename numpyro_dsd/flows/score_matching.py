"""Diffusion score matching (docs/math.md §1.3) and its latent-space form for flows (Theorem 3.4).

For a diffusion matrix :math:`M(x)` (d, d), the diffusion score matching divergence is

.. math::
    \\mathrm{DSM}_M(q, p) = \\mathbb E_q\\|M^\\top(s_q - s_p)\\|^2
    = \\mathbb E_q\\big[\\|M^\\top s_p\\|^2 + 2\\,\\nabla\\cdot(MM^\\top s_p)\\big] + C_q,
    \\qquad C_q = \\mathbb E_q\\|M^\\top s_q\\|^2,

the second (implicit, Hyvärinen) form needing only samples of :math:`q`. :math:`M = I` gives
plain score matching. For a flow :math:`z = T(x)` with Jacobian :math:`J` and :math:`M = J^{-1}`
it is score matching of the pushforwards: :math:`\\mathrm{DSM}_{J^{-1}}(q, p) =
\\mathrm{SM}(T_\\#q, T_\\#p)` (Theorem 3.4). The objectives never invert a flow's Jacobian:
products with :math:`J^{-1}` and :math:`J^{-\\top}` are linear solves (docs/math.md §8).

A *diffusion* here is any of: ``None`` or :class:`~numpyro_dsd.Identity` (:math:`M = I`),
:class:`~numpyro_dsd.Constant`, :class:`~numpyro_dsd.PositionDependent`, a (d, d) array, a
callable ``x -> M(x)``, or a flow: a data-to-latent bijection with ``transform_and_log_det``
(e.g. ``tests/_flows.py::CouplingFlow``), a NumPyro ``Transform``, or an object holding one as
``.bijection`` (e.g. :class:`~numpyro_dsd.FlowDiffusion`); for a flow :math:`M(x) = J(x)^{-1}`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from numpyro_dsd._validation import as_points, check_finite, float_dtype
from numpyro_dsd.flows.bijections import as_bijection, check_flow_dim, eval_on_point, latent_score
from numpyro_dsd.stein.diffusion import Constant, Identity, PositionDependent

__all__ = ["matrix_field", "dsm", "implicit_dsm"]

Fn = Callable[[jax.Array], jax.Array]
#: Points evaluated at once (vectorised) by the per-point loops of this module.
BATCH_SIZE = 256
Fields = Callable[[jax.Array], tuple[jax.Array, jax.Array]]

_DIFFUSION_HINT = (
    "Give None or Identity() (M = I), Constant(M), PositionDependent(fn), a (d, d) array, a "
    "callable x -> M(x), or a flow (an object with transform_and_log_det, a NumPyro Transform, "
    "or an object with a .bijection attribute)."
)


class _Field(NamedTuple):
    """:math:`M(x) = K(x)` (``inverse=False``) or :math:`K(x)^{-1}` (``inverse=True``, flows)."""

    K: Fn
    inverse: bool
    bijection: object | None = None


# --- flows -----------------------------------------------------------------------------------


def _flow_bijection(obj: object) -> object | None:
    """The data-to-latent bijection of ``obj`` (:func:`~numpyro_dsd.flows.bijections.as_bijection`),
    or ``None`` if ``obj`` is not a flow."""
    try:
        return as_bijection(obj)
    except ValueError:
        return None


def jacobian_and_log_det(bijection: object, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """:math:`J(x) = \\partial T(x)/\\partial x` (d, d) and the flow's :math:`\\log|\\det J(x)|`
    at one point ``x`` (d,)."""
    return jax.jacfwd(bijection.transform_and_log_det, has_aux=True)(x)


# --- diffusion matrices ----------------------------------------------------------------------


def _eye(x: jax.Array) -> jax.Array:
    return jnp.eye(x.shape[0], dtype=x.dtype)


def _constant(M: ArrayLike) -> Fn:
    return lambda x: jnp.asarray(M, dtype=x.dtype)


def _field(diffusion: object) -> _Field:
    if diffusion is None or isinstance(diffusion, Identity):
        return _Field(_eye, False)
    if isinstance(diffusion, Constant):
        return _Field(_constant(diffusion.M), False)
    if isinstance(diffusion, PositionDependent):
        return _Field(diffusion.fn, False)
    bij = _flow_bijection(diffusion)
    if bij is not None:
        return _Field(lambda x: jacobian_and_log_det(bij, x)[0], True, bij)
    if callable(diffusion):
        return _Field(diffusion, False)
    if np.ndim(diffusion) == 2:
        return _Field(_constant(Constant(diffusion).M), False)
    raise ValueError(f"Cannot use {type(diffusion).__name__} as a diffusion. {_DIFFUSION_HINT}")


def _checked_field(diffusion: object, d: int, dtype: jnp.dtype) -> _Field:
    field = _field(diffusion)
    if field.bijection is not None:
        check_flow_dim(field.bijection, d, dtype)
        return field
    out = eval_on_point(field.K, d, dtype, "The diffusion's M(x)")
    if out.shape != (d, d):
        raise ValueError(
            f"The diffusion gives M(x) of shape {out.shape} for points of dimension d={d}; it "
            f"must be ({d}, {d}). Give a diffusion of the points' dimension."
        )
    return field


def solve_metric(J: jax.Array, v: jax.Array) -> jax.Array:
    """:math:`J^{-1}J^{-\\top}v = (J^\\top J)^{-1}v` by two solves with :math:`J` (never with
    :math:`J^\\top J`, whose condition number is squared)."""
    return jnp.linalg.solve(J, jnp.linalg.solve(J.T, v))


def map_points(fn: Callable[..., jax.Array], *arrays: jax.Array) -> jax.Array:
    """``fn`` applied to the rows of ``arrays`` (n, ...), jitted, :data:`BATCH_SIZE` rows at a
    time (``lax.map`` over vmapped blocks; the last block is padded with copies of row 0).

    Blocks bound the memory and, on CPU, the batch of every LAPACK call: with jaxlib 0.10,
    several large batched solves running at once can deadlock the CPU thread pool (the LAPACK
    kernels split their batch over the pool and block on it).
    """
    n = arrays[0].shape[0]
    size = min(BATCH_SIZE, n)
    blocks = -(-n // size)

    def run(*a: jax.Array) -> jax.Array:
        padded = [
            jnp.concatenate([r, jnp.broadcast_to(r[:1], (blocks * size - n, *r.shape[1:]))])
            for r in a
        ]
        shaped = [r.reshape(blocks, size, *r.shape[1:]) for r in padded]
        out = jax.lax.map(lambda b: jax.vmap(fn)(*b), shaped)
        return out.reshape(blocks * size, *out.shape[2:])[:n]

    return jax.jit(run)(*arrays)


def _mt(field: _Field, K: jax.Array, v: jax.Array) -> jax.Array:
    """:math:`M^\\top v` (a solve with :math:`K^\\top` for flows)."""
    return jnp.linalg.solve(K.T, v) if field.inverse else K.T @ v


def _mmt(field: _Field, K: jax.Array, v: jax.Array) -> jax.Array:
    """:math:`MM^\\top v` (two solves for flows)."""
    return solve_metric(K, v) if field.inverse else K @ (K.T @ v)


def matrix_field(diffusion: object = None) -> Fn:
    """The diffusion matrix as a function of one point: ``x`` (d,) -> :math:`M(x)` (d, d).

    Parameters
    ----------
    diffusion : optional
        ``None`` or :class:`~numpyro_dsd.Identity` (:math:`M = I`),
        :class:`~numpyro_dsd.Constant` (``.M``), :class:`~numpyro_dsd.PositionDependent`
        (``.fn``), a (d, d) array, a callable ``x -> M(x)``, or a flow (a data-to-latent
        bijection with ``transform_and_log_det``, a NumPyro ``Transform``, or an object with a
        ``.bijection``), for which :math:`M(x) = J(x)^{-1}`, :math:`J = \\partial T/\\partial x`.

    Returns
    -------
    callable (d,) -> (d, d), in the dtype of the point.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from numpyro.distributions.transforms import AffineTransform
    >>> matrix_field(AffineTransform(0.0, 2.0 * jnp.ones(2)))(jnp.ones(2))  # J = 2 I
    Array([[0.5, 0. ],
           [0. , 0.5]], dtype=float32)
    >>> matrix_field()(jnp.zeros(2))
    Array([[1., 0.],
           [0., 1.]], dtype=float32)
    """
    field = _field(diffusion)
    if not field.inverse:
        return field.K
    return lambda x: jnp.linalg.solve(field.K(x), _eye(x))


# --- validation --------------------------------------------------------------------------------


def _scores(x: jax.Array, scores: ArrayLike, name: str) -> jax.Array:
    if np.shape(scores) != x.shape:
        raise ValueError(
            f"{name} must have the shape of x {x.shape} (one gradient of log density per "
            f"point); got {np.shape(scores)}."
        )
    s = jnp.asarray(scores, dtype=x.dtype)
    check_finite(s, name, "The log density's gradient is not finite there: check the density.")
    return s


def _score_fn(log_p: Fn | None, score_fn: Fn | None, d: int, dtype: jnp.dtype) -> Fn:
    """:math:`s_p` of one point from exactly one of ``log_p`` and ``score_fn``."""
    if (log_p is None) == (score_fn is None):
        raise ValueError(
            "Give exactly one of log_p (a callable log density of one (d,) point) and score_fn "
            "(a callable (d,) -> (d,) gradient of the log density)."
        )
    name, user, want = ("log_p", log_p, ()) if score_fn is None else ("score_fn", score_fn, (d,))
    shape = eval_on_point(user, d, dtype, name).shape
    if shape != want:
        raise ValueError(
            f"{name} must map a ({d},) point to shape {want}; it returned shape {shape}."
        )
    return score_fn if log_p is None else jax.grad(log_p)


def _finished(terms: jax.Array, pointwise: bool, what: str) -> jax.Array:
    check_finite(terms[:, None], what, "Check the density and the diffusion at those points.")
    return terms if pointwise else jnp.mean(terms)


# --- explicit DSM ----------------------------------------------------------------------------


def dsm(
    x: ArrayLike,
    scores_q: ArrayLike,
    scores_p: ArrayLike,
    diffusion: object = None,
    *,
    pointwise: bool = False,
) -> jax.Array:
    """Explicit diffusion score matching :math:`\\frac1n\\sum_i\\|M^\\top(s_q - s_p)\\|^2(x_i)`.

    A Monte Carlo estimate of :math:`\\mathrm{DSM}_M(q, p)` (docs/math.md §1.3) from draws
    :math:`x_i \\sim q`; ``diffusion=None`` gives plain score matching
    :math:`\\mathrm{SM}(q, p) = \\mathbb E_q\\|s_q - s_p\\|^2`. With a flow, :math:`M = J^{-1}`
    and the value is :math:`\\mathrm{SM}(T_\\#q, T_\\#p)` (Theorem 3.4). The value depends on
    :math:`M` only through :math:`MM^\\top`.

    Parameters
    ----------
    x : (n, d)
        Points.
    scores_q, scores_p : (n, d)
        :math:`\\nabla\\log q(x_i)` and :math:`\\nabla\\log p(x_i)`.
    diffusion : optional
        See :func:`~numpyro_dsd.flows.score_matching.matrix_field`; ``None`` means :math:`M = I`.
    pointwise : bool
        Return the (n,) terms :math:`\\|M(x_i)^\\top(s_q - s_p)(x_i)\\|^2` instead of their mean.

    Returns
    -------
    Scalar (or (n,) with ``pointwise``), in the dtype of the inputs.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> x = jnp.array([[0.0, 1.0], [1.0, -1.0]])
    >>> dsm(x, -x, -(x - 1.0))  # N(0, I) vs N(1, I): |s_q - s_p|^2 = 2
    Array(2., dtype=float32)
    >>> dsm(x, -x, -(x - 1.0), 2.0 * jnp.eye(2), pointwise=True)
    Array([8., 8.], dtype=float32)
    """
    dtype = float_dtype(x, scores_q, scores_p)
    x = as_points(x, dtype=dtype)
    delta = _scores(x, scores_q, "scores_q") - _scores(x, scores_p, "scores_p")
    field = _checked_field(diffusion, x.shape[1], dtype)

    def term(xi: jax.Array, di: jax.Array) -> jax.Array:
        v = _mt(field, field.K(xi), di)
        return v @ v

    return _finished(map_points(term, x, delta), pointwise, "the DSM terms")


# --- implicit DSM ----------------------------------------------------------------------------


def _hyvarinen_term(fields: Fields, x: jax.Array) -> jax.Array:
    """:math:`s^\\top u + 2\\,\\nabla\\cdot u` at one point, from ``fields(y) = (u(y), s(y))``.

    With :math:`u = MM^\\top s_p` and :math:`s = s_p` this is the implicit DSM integrand
    :math:`\\|M^\\top s_p\\|^2 + 2\\nabla\\cdot(MM^\\top s_p)`; the divergence is the trace of
    one forward-mode Jacobian.
    """

    def f(y: jax.Array) -> tuple[jax.Array, jax.Array]:
        u, s = fields(y)
        return u, s @ u

    du, su = jax.jacfwd(f, has_aux=True)(x)
    return su + 2.0 * jnp.trace(du)


def _x_fields(field: _Field, score: Fn) -> Fields:
    def fields(y: jax.Array) -> tuple[jax.Array, jax.Array]:
        s = score(y)
        return _mmt(field, field.K(y), s), s

    return fields


def _latent_score_fn(bijection: object, score: Fn) -> Fn:
    """:math:`s_{T_\\#p}(z) = \\nabla G(z)^\\top s_p(G(z)) + \\nabla\\log|\\det\\nabla G(z)|`.

    The score of :math:`\\log T_\\#p(z) = \\log p(G(z)) + \\log|\\det\\nabla G(z)|`,
    :math:`G = T^{-1}` from ``bijection.inverse_and_log_det``, as one vector-Jacobian product.
    """

    def latent(z: jax.Array) -> jax.Array:
        return latent_score(bijection, z, score)[1]

    return latent


def _latent_terms(bijection: object, score: Fn, x: jax.Array) -> jax.Array:
    if not hasattr(bijection, "inverse_and_log_det"):
        raise ValueError(
            "latent=True needs the flow's inverse: give a bijection with inverse_and_log_det."
        )
    s_z = _latent_score_fn(bijection, score)

    def term(xi: jax.Array) -> jax.Array:
        z = bijection.transform_and_log_det(xi)[0]
        return _hyvarinen_term(lambda y: (s_z(y), s_z(y)), z)

    return map_points(term, x)


def implicit_dsm(
    x: ArrayLike,
    log_p: Fn | None = None,
    *,
    score_fn: Fn | None = None,
    diffusion: object = None,
    latent: bool = False,
    pointwise: bool = False,
) -> jax.Array:
    """Implicit (Hyvärinen) DSM objective from draws :math:`x_i \\sim q`, up to a ``q``-constant.

    .. math::
        \\hat L_M(p) = \\frac1n\\sum_i\\Big[\\|M^\\top s_p\\|^2
        + 2\\,\\nabla\\cdot(MM^\\top s_p)\\Big](x_i),
        \\qquad \\mathbb E\\,\\hat L_M(p) = \\mathrm{DSM}_M(q, p)
        - \\mathbb E_q\\|M^\\top s_q\\|^2 .

    It needs no score of :math:`q`, so it is the objective to minimise over the parameters of
    an unnormalised model :math:`p` (closed over in ``log_p``; ``jax.grad`` goes through it).
    The divergence is exact (one forward-mode Jacobian per point). With a flow,
    :math:`M = J^{-1}`, so :math:`MM^\\top s_p = J^{-1}J^{-\\top}s_p` (two solves).

    ``latent=True`` (flows only) evaluates instead the latent Hyvärinen objective
    :math:`\\frac1n\\sum_i[\\|s_{T_\\#p}\\|^2 + 2\\nabla_z\\cdot s_{T_\\#p}](T(x_i))`, with
    :math:`\\log T_\\#p(z) = \\log p(G(z)) + \\log|\\det\\nabla G(z)|` and :math:`G = T^{-1}`
    from the flow's ``inverse_and_log_det``. Pointwise, the ``x``-space integrand minus the
    latent one is :math:`c_T(x) = \\nabla\\ell^\\top\\mathsf G^{-1}\\nabla\\ell + 2\\nabla\\cdot
    (\\mathsf G^{-1}\\nabla\\ell)`, :math:`\\ell = \\log|\\det J|`, :math:`\\mathsf G = J^\\top J`:
    it depends on the flow only (not on ``p``, not on ``q``). So on any draws both objectives
    have the same gradients in the parameters of ``p``; their expected difference is
    :math:`\\mathbb E_{T_\\#q}\\|s_{T_\\#q}\\|^2 - \\mathbb E_q\\|J^{-\\top}s_q\\|^2`
    (Theorem 3.4).

    Parameters
    ----------
    x : (n, d)
        Draws of :math:`q`.
    log_p : callable (d,) -> scalar, optional
        Log density of the model (unnormalised). Give this or ``score_fn``.
    score_fn : callable (d,) -> (d,), optional
        :math:`s_p = \\nabla\\log p` of one point.
    diffusion : optional
        See :func:`~numpyro_dsd.flows.score_matching.matrix_field`; ``None`` means :math:`M = I`
        (Hyvärinen score matching).
    latent : bool
        Use the latent form (``diffusion`` must be a flow with ``inverse_and_log_det``).
    pointwise : bool
        Return the (n,) integrands instead of their mean.

    Returns
    -------
    Scalar (or (n,) with ``pointwise``), in the dtype of ``x``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> x = jnp.array([[0.5, -1.0], [1.5, 0.0]])
    >>> implicit_dsm(x, lambda y: -0.5 * y @ y)  # |x|^2 - 2 d, averaged
    Array(-2.25, dtype=float32)
    >>> implicit_dsm(x, score_fn=lambda y: -y, diffusion=2.0 * jnp.eye(2), pointwise=True)
    Array([-11., -7.], dtype=float32)
    """
    dtype = float_dtype(x)
    x = as_points(x, dtype=dtype)
    d = x.shape[1]
    field = _checked_field(diffusion, d, dtype)
    score = _score_fn(log_p, score_fn, d, dtype)
    if latent:
        if field.bijection is None:
            raise ValueError("latent=True needs a flow as the diffusion. " + _DIFFUSION_HINT)
        terms = _latent_terms(field.bijection, score, x)
    else:
        fields = _x_fields(field, score)
        terms = map_points(lambda xi: _hyvarinen_term(fields, xi), x)
    return _finished(terms, pointwise, "the implicit DSM terms")
