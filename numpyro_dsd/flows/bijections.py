"""The small flow interface: a bijection :math:`T` (data to latent) and its log-determinant.

A normalizing flow is used here as a change of coordinates :math:`z = T(x)` with Jacobian
:math:`J(x) = \\partial z / \\partial x` (docs/math.md §0). Everything
:class:`~numpyro_dsd.FlowDiffusion` needs of it is, for **one** point,

- ``transform_and_log_det(x) -> (z, log|det J(x)|)``, the normalising direction, and
- ``inverse_and_log_det(z) -> (x, log|det ∇G(z)|)`` with :math:`G = T^{-1}`, when it exists.

These are the method names of flowjax bijections, so a flowjax bijection (which maps latent to
data in flowjax's ``Transformed`` distributions, i.e. it is a generator) is used as is. NumPyro
transforms are adapted by :func:`as_bijection`; :func:`inverse` swaps the two directions, so a
generator :math:`G` (latent to data, e.g. ``guide.get_transform(params)`` of a fitted
``AutoIAFNormal``) becomes the data-to-latent map :math:`T = G^{-1}`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp
from numpyro.distributions.transforms import Transform

__all__ = [
    "Bijection",
    "NotInvertibleError",
    "NumPyroBijection",
    "Inverse",
    "as_bijection",
    "inverse",
    "check_flow_dim",
    "eval_on_point",
    "latent_score",
]


class NotInvertibleError(ValueError):
    """The flow has no inverse in the direction that was asked for."""


@runtime_checkable
class Bijection(Protocol):
    """A bijection :math:`T` of :math:`\\mathbb R^d`, evaluated one point at a time."""

    def transform_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """:math:`(T(x), \\log|\\det \\nabla T(x)|)` for one point ``x`` (d,)."""
        ...

    def inverse_and_log_det(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """:math:`(T^{-1}(z), \\log|\\det \\nabla T^{-1}(z)|)` for one point ``z`` (d,)."""
        ...


def _name(obj: object) -> str:
    return type(obj).__name__


class NumPyroBijection:
    """A NumPyro :class:`~numpyro.distributions.transforms.Transform` as a :class:`Bijection`.

    ``transform(x)`` is taken as :math:`T(x)` and ``transform.log_abs_det_jacobian(x, T(x))``
    (summed over the event if the transform is elementwise) as :math:`\\log|\\det J(x)|`. The
    inverse uses ``transform.inv``; transforms without one (e.g.
    ``BlockNeuralAutoregressiveTransform``) raise :class:`NotInvertibleError`.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from numpyro.distributions.transforms import AffineTransform
    >>> b = NumPyroBijection(AffineTransform(1.0, 2.0 * jnp.ones(3)))
    >>> z, logdet = b.transform_and_log_det(jnp.zeros(3))
    >>> z, round(float(logdet), 4)
    (Array([1., 1., 1.], dtype=float32), 2.0794)
    """

    def __init__(self, transform: Transform):
        self.transform = transform

    def transform_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        z = self.transform(x)
        return z, jnp.sum(self.transform.log_abs_det_jacobian(x, z))

    def inverse_and_log_det(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        try:
            x = self.transform.inv(z)
        except NotImplementedError as err:
            raise NotInvertibleError(
                f"{_name(self.transform)} has no inverse ({err}). A flow used as a generator "
                "must be invertible: fit an AutoIAFNormal guide (numpyro_dsd.fit_flow) or a flow "
                "to the draws (numpyro_dsd.fit_flow_to_samples), or pass the data-to-latent map "
                "itself to FlowDiffusion(T)."
            ) from None
        return x, -jnp.sum(self.transform.log_abs_det_jacobian(x, z))

    def __repr__(self) -> str:
        return f"NumPyroBijection({_name(self.transform)})"


class Inverse:
    """The inverse :math:`T^{-1}` of a bijection :math:`T`: the two directions swapped.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from numpyro.distributions.transforms import ExpTransform
    >>> g = Inverse(NumPyroBijection(ExpTransform()))  # log: (0, inf) -> R
    >>> g.transform_and_log_det(jnp.array([1.0]))
    (Array([0.], dtype=float32), Array(-0., dtype=float32))
    """

    def __init__(self, bijection: Bijection):
        self.bijection = bijection

    def transform_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.bijection.inverse_and_log_det(x)

    def inverse_and_log_det(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.bijection.transform_and_log_det(z)

    def __repr__(self) -> str:
        return f"Inverse({self.bijection!r})"


def as_bijection(flow: object) -> Bijection:
    """Adapt ``flow`` to :class:`Bijection`, in the direction it is given.

    Accepts a NumPyro ``Transform``, any object with ``transform_and_log_det`` and
    ``inverse_and_log_det`` (flowjax bijections, :class:`~numpyro_dsd.flows.bijections.Inverse`,
    ...), or an object holding one as ``.bijection`` (a :class:`~numpyro_dsd.FlowDiffusion`).
    """
    if isinstance(flow, Transform):
        return NumPyroBijection(flow)
    if isinstance(flow, Bijection):
        return flow
    inner = getattr(flow, "bijection", None)
    if inner is not None:
        return as_bijection(inner)
    raise ValueError(
        f"Cannot use {_name(flow)} as a flow ({_name(flow)} is not a flow): give a NumPyro "
        "Transform (e.g. guide.get_transform(params)), a bijection with transform_and_log_det and "
        "inverse_and_log_det methods (e.g. a flowjax bijection), or an object holding one as "
        ".bijection (a FlowDiffusion)."
    )


def inverse(flow: object) -> Bijection:
    """The inverse of ``flow`` (adapted with :func:`as_bijection`) as a :class:`Bijection`."""
    b = as_bijection(flow)
    return b.bijection if isinstance(b, Inverse) else Inverse(b)


def eval_on_point(fn: Callable, d: int, dtype: jnp.dtype, name: str) -> object:
    """Output shapes of ``fn`` on one (d,) point (``jax.eval_shape``); a ``ValueError`` naming
    ``name`` if it cannot be applied to such a point."""
    try:
        return jax.eval_shape(fn, jax.ShapeDtypeStruct((d,), dtype))
    except NotInvertibleError:
        raise
    except (TypeError, ValueError, IndexError) as err:
        raise ValueError(
            f"{name} cannot be applied to a point of dimension d={d} ({type(err).__name__}: "
            f"{err}). Give points of the dimension it was built for."
        ) from None


def check_flow_dim(bijection: object, d: int, dtype: jnp.dtype) -> None:
    """``ValueError`` unless ``bijection`` maps a (d,) point to ((d,), scalar)."""
    z, logdet = eval_on_point(bijection.transform_and_log_det, d, dtype, "The flow")
    if z.shape != (d,) or logdet.shape != ():
        raise ValueError(
            f"The flow must map a ({d},) point to ((d,), scalar log|det J|); it returned shapes "
            f"{z.shape} and {logdet.shape}. Give points of the flow's dimension (the points have "
            f"dimension d={d})."
        )


def latent_score(
    bijection: Bijection, z: jax.Array, score: Callable[[jax.Array], jax.Array]
) -> tuple[jax.Array, jax.Array]:
    """Pushed-forward score at one latent point by one vector-Jacobian product of :math:`G`.

    .. math:: s_{T_\\#p}(z) = \\nabla G(z)^\\top s_p(G(z)) + \\nabla_z\\log|\\det\\nabla G(z)|,
        \\qquad G = T^{-1}

    (Lemma 3.1). ``score`` maps :math:`G(z)` to :math:`s_p(G(z))`. Returns :math:`(G(z), s)`.
    """
    (x, logdet), vjp = jax.vjp(bijection.inverse_and_log_det, z)
    (s_z,) = vjp((score(x).astype(x.dtype), jnp.ones_like(logdet)))
    return x, s_z
