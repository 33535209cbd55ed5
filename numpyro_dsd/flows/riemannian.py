"""The Riemannian view of a flow (docs/math.md §4): the pulled-back metric :math:`J^\\top J`.

A data-to-latent flow :math:`z = T(x)` with Jacobian :math:`J(x)` makes :math:`\\mathbb R^d` a
Riemannian manifold with metric :math:`\\mathsf G(x) = J(x)^\\top J(x)` and volume
:math:`\\sqrt{\\det\\mathsf G}\\,dx = |\\det J|\\,dx`. Then

- :math:`\\operatorname{grad}_{\\mathsf G} f = \\mathsf G^{-1}\\nabla f
  = J^{-1}J^{-\\top}\\nabla f`,
  :math:`\\|v\\|_{\\mathsf G}^2 = v^\\top\\mathsf G v = \\|Jv\\|^2`;
- :math:`\\Delta_{\\mathsf G} f = |\\mathsf G|^{-1/2}\\partial_i(|\\mathsf G|^{1/2}\\mathsf G^{ij}
  \\partial_j f) = \\nabla\\cdot u + \\nabla\\log|\\det J|\\cdot u` with
  :math:`u = \\mathsf G^{-1}\\nabla f`;
- :math:`\\tilde p = p/|\\det J| = T_\\#p\\circ T`, the density with respect to that volume;
- :math:`\\mathrm{DSM}_{J^{-1}}(q, p) = \\mathbb E_q[(s_q - s_p)^\\top\\mathsf G^{-1}(s_q - s_p)]`,
  and the latent Hyvärinen integrand :math:`\\|s_{T_\\#p}\\|^2 + 2\\nabla_z\\cdot s_{T_\\#p}` at
  :math:`T(x)` is :func:`riemannian_hyvarinen` at :math:`x`.

``flow`` is a data-to-latent bijection with ``transform_and_log_det(x) -> (z, log|det J|)`` for
one point (see :mod:`numpyro_dsd.flows.bijections`), a NumPyro ``Transform``, or an object
holding one as ``.bijection``. Points ``x`` are one point (d,) or a batch (n, d); the output has
the same leading shape. :math:`\\mathsf G^{-1}` is applied with two solves, never an inverse
(docs/math.md §8).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from numpyro_dsd._validation import as_points, check_finite, float_dtype
from numpyro_dsd.flows.bijections import as_bijection, check_flow_dim, eval_on_point
from numpyro_dsd.flows.score_matching import jacobian_and_log_det, map_points, solve_metric

__all__ = [
    "metric",
    "riemannian_gradient",
    "riemannian_norm",
    "laplace_beltrami",
    "log_density_wrt_volume",
    "riemannian_hyvarinen",
]

Fn = Callable[[jax.Array], jax.Array]


# --- validation and batching -------------------------------------------------------------------


def _points(flow: object, x: ArrayLike) -> tuple[object, jax.Array, bool]:
    """``(bijection, x as (n, d), whether x was one point)``, checked against the flow."""
    bij = as_bijection(flow)
    ndim = np.ndim(x)
    if ndim not in (1, 2):
        raise ValueError(
            f"x must be one point (d,) or a batch of points (n, d); got shape {np.shape(x)}."
        )
    pts = as_points(jnp.asarray(x)[None] if ndim == 1 else x, dtype=float_dtype(x))
    check_flow_dim(bij, pts.shape[1], pts.dtype)
    return bij, pts, ndim == 1


def _vectors(v: ArrayLike, x: jax.Array, single: bool, name: str) -> jax.Array:
    want = x.shape[1:] if single else x.shape
    if np.shape(v) != want:
        raise ValueError(
            f"{name} must have the shape of x {want} (one per point); got {np.shape(v)}."
        )
    out = jnp.asarray(v, dtype=x.dtype).reshape(x.shape)
    check_finite(out, name, f"Give finite {name}.")
    return out


def _scalar_fn(f: Fn, d: int, dtype: jnp.dtype, name: str) -> None:
    shape = eval_on_point(f, d, dtype, name).shape
    if shape != ():
        raise ValueError(f"{name} must map a ({d},) point to a scalar; it returned shape {shape}.")


def _map(fn: Callable[..., jax.Array], single: bool, *args: jax.Array) -> jax.Array:
    out = map_points(fn, *args)
    return out[0] if single else out


# --- public API --------------------------------------------------------------------------------


def metric(flow: object, x: ArrayLike) -> jax.Array:
    """The pulled-back metric :math:`\\mathsf G(x) = J(x)^\\top J(x)`.

    Parameters
    ----------
    flow : bijection
        Data-to-latent map :math:`T` (see the module docstring).
    x : (d,) or (n, d)
        Points.

    Returns
    -------
    (d, d) or (n, d, d).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from numpyro.distributions.transforms import AffineTransform
    >>> metric(AffineTransform(0.0, 2.0 * jnp.ones(2)), jnp.zeros(2))  # J = 2 I
    Array([[4., 0.],
           [0., 4.]], dtype=float32)
    """
    bij, pts, single = _points(flow, x)

    def one(xi: jax.Array) -> jax.Array:
        J = jacobian_and_log_det(bij, xi)[0]
        return J.T @ J

    return _map(one, single, pts)


def riemannian_gradient(flow: object, x: ArrayLike, grad: ArrayLike) -> jax.Array:
    """Riemannian gradient :math:`\\mathsf G^{-1}\\nabla f = J^{-1}J^{-\\top}\\nabla f`.

    Parameters
    ----------
    flow : bijection
        Data-to-latent map :math:`T`.
    x : (d,) or (n, d)
        Points.
    grad : same shape as ``x``
        Euclidean gradients :math:`\\nabla f(x)`.

    Returns
    -------
    Same shape as ``x``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from numpyro.distributions.transforms import AffineTransform
    >>> riemannian_gradient(AffineTransform(0.0, 2.0), jnp.zeros(2), jnp.array([1.0, 2.0]))
    Array([0.25, 0.5 ], dtype=float32)
    """
    bij, pts, single = _points(flow, x)
    g = _vectors(grad, pts, single, "grad")
    return _map(lambda xi, gi: solve_metric(jacobian_and_log_det(bij, xi)[0], gi), single, pts, g)


def riemannian_norm(flow: object, x: ArrayLike, v: ArrayLike) -> jax.Array:
    """Length of tangent vectors, :math:`\\|v\\|_{\\mathsf G} = \\sqrt{v^\\top\\mathsf G v}`.

    Computed as :math:`\\|J v\\|`.

    Parameters
    ----------
    flow : bijection
        Data-to-latent map :math:`T`.
    x : (d,) or (n, d)
        Base points.
    v : same shape as ``x``
        Tangent vectors at ``x``.

    Returns
    -------
    Scalar or (n,).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from numpyro.distributions.transforms import AffineTransform
    >>> riemannian_norm(AffineTransform(0.0, 2.0), jnp.zeros(2), jnp.array([3.0, 4.0]))
    Array(10., dtype=float32)
    """
    bij, pts, single = _points(flow, x)
    vs = _vectors(v, pts, single, "v")
    return _map(
        lambda xi, vi: jnp.linalg.norm(jacobian_and_log_det(bij, xi)[0] @ vi), single, pts, vs
    )


def _lb_point(bij: object, f: Fn, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """:math:`(\\Delta_{\\mathsf G}f, \\|\\operatorname{grad}_{\\mathsf G}f\\|^2_{\\mathsf G})`
    at one point, via :math:`\\Delta_{\\mathsf G}f = \\nabla\\cdot u + \\nabla\\ell\\cdot u`,
    :math:`u = \\mathsf G^{-1}\\nabla f`, :math:`\\ell = \\log|\\det J|` (one forward Jacobian)."""

    def fields(y: jax.Array) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
        J, logdet = jacobian_and_log_det(bij, y)
        g = jax.grad(f)(y)
        u = solve_metric(J, g)
        return (u, logdet), (u, g)

    (du, dlogdet), (u, g) = jax.jacfwd(fields, has_aux=True)(x)
    return jnp.trace(du) + dlogdet @ u, g @ u


def laplace_beltrami(flow: object, f: Fn, x: ArrayLike) -> jax.Array:
    """Laplace-Beltrami operator of :math:`\\mathsf G = J^\\top J` applied to a scalar function.

    .. math::
        \\Delta_{\\mathsf G} f = |\\mathsf G|^{-1/2}\\partial_i\\big(|\\mathsf G|^{1/2}
        \\mathsf G^{ij}\\partial_j f\\big) = \\nabla\\cdot u + \\nabla\\log|\\det J|\\cdot u,
        \\qquad u = \\mathsf G^{-1}\\nabla f,

    using :math:`|\\mathsf G|^{1/2} = |\\det J|` (the flow's own log-determinant). Exact: one
    forward-mode Jacobian of :math:`(u, \\log|\\det J|)` per point.

    Parameters
    ----------
    flow : bijection
        Data-to-latent map :math:`T`.
    f : callable (d,) -> scalar
        Twice differentiable with JAX.
    x : (d,) or (n, d)
        Points.

    Returns
    -------
    Scalar or (n,).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from numpyro.distributions.transforms import AffineTransform
    >>> # G = 4 I, Hessian of |y|^2 = 2 I: tr(G^-1 H) = 1 in d = 2
    >>> laplace_beltrami(AffineTransform(0.0, 2.0), lambda y: y @ y, jnp.ones((3, 2)))
    Array([1., 1., 1.], dtype=float32)
    """
    bij, pts, single = _points(flow, x)
    _scalar_fn(f, pts.shape[1], pts.dtype, "f")
    return _map(lambda xi: _lb_point(bij, f, xi)[0], single, pts)


def log_density_wrt_volume(flow: object, log_p: Fn) -> Fn:
    """:math:`\\log\\tilde p = \\log p - \\log|\\det J|`, the log density with respect to the
    Riemannian volume :math:`|\\det J|\\,dx`; it equals :math:`\\log T_\\#p\\circ T`.

    Parameters
    ----------
    flow : bijection
        Data-to-latent map :math:`T`.
    log_p : callable (d,) -> scalar
        Log density (with respect to Lebesgue measure) of one point.

    Returns
    -------
    callable (d,) -> scalar (one point; ``jax.vmap`` it for a batch).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from numpyro.distributions.transforms import AffineTransform
    >>> log_pt = log_density_wrt_volume(AffineTransform(0.0, 2.0), lambda y: -0.5 * y @ y)
    >>> round(float(log_pt(jnp.ones(2))), 4)  # -1 - log 4
    -2.3863
    """
    bij = as_bijection(flow)
    if not callable(log_p):
        raise ValueError("log_p must be a callable log density of one (d,) point.")
    return lambda x: log_p(x) - bij.transform_and_log_det(x)[1]


def riemannian_hyvarinen(flow: object, log_p: Fn, x: ArrayLike) -> jax.Array:
    """Riemannian Hyvärinen integrand
    :math:`\\|\\operatorname{grad}_{\\mathsf G}\\log\\tilde p\\|^2_{\\mathsf G}
    + 2\\,\\Delta_{\\mathsf G}\\log\\tilde p`, with :math:`\\tilde p = p/|\\det J|`.

    It equals the latent Hyvärinen integrand
    :math:`\\|s_{T_\\#p}\\|^2 + 2\\nabla_z\\cdot s_{T_\\#p}` at :math:`z = T(x)` (docs/math.md §4,
    oracle 13), so its mean over draws of :math:`q` is the latent implicit score matching
    objective of :func:`numpyro_dsd.flows.score_matching.implicit_dsm` with ``latent=True``,
    computed without the flow's inverse.

    Parameters
    ----------
    flow : bijection
        Data-to-latent map :math:`T`.
    log_p : callable (d,) -> scalar
        Log density of one point (unnormalised is fine).
    x : (d,) or (n, d)
        Points.

    Returns
    -------
    Scalar or (n,).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from numpyro.distributions.transforms import AffineTransform
    >>> # G = 4 I, log p~ = -|y|^2 / 2 + const: |y|^2 / 4 - 2 d / 4
    >>> riemannian_hyvarinen(AffineTransform(0.0, 2.0), lambda y: -0.5 * y @ y, jnp.full(2, 2.0))
    Array(1., dtype=float32)
    """
    bij, pts, single = _points(flow, x)
    _scalar_fn(log_p, pts.shape[1], pts.dtype, "log_p")
    log_pt = log_density_wrt_volume(bij, log_p)

    def one(xi: jax.Array) -> jax.Array:
        lb, sq = _lb_point(bij, log_pt, xi)
        return sq + 2.0 * lb

    return _map(one, single, pts)
