"""Unconstrained draws and their scores for a NumPyro model.

Kernel Stein discrepancies need, for every draw :math:`x_i`, the score
:math:`s_i = \\nabla_x \\log p(x_i)` of the target density. For a NumPyro model the
natural target is the density NUTS samples from: the log joint density of the model in
*unconstrained* space, including the log absolute determinant of the Jacobian of the
constraint transforms,

.. math::

    \\log p(x) = \\log \\pi(T(x)) + \\log |\\det J_T(x)| = -U(x),

where :math:`T` maps unconstrained values to the supports of the latent sites and
:math:`U` is :func:`numpyro.infer.util.potential_energy`. This module turns the
constrained draws returned by :meth:`numpyro.infer.MCMC.get_samples` into flat
unconstrained draws ``x`` of shape ``(*batch_shape, d)`` and their scores.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from numpyro_dsd._validation import check_finite
from numpyro_dsd.model.layout import ModelArgs, ModelLayout, split_model_args

__all__ = ["DEFAULT_BATCH_SIZE", "ModelDraws", "latent_sites", "log_density_fn", "model_draws"]

#: Number of draws processed at once (vectorised) by :func:`model_draws` by default.
DEFAULT_BATCH_SIZE = 256

Model = Callable[..., Any]
Unravel = Callable[[jax.Array], dict[str, jax.Array]]

_X_HINT = (
    "This usually means the draws lie outside (or on the boundary of) a site's support, "
    "e.g. a negative or zero scale, or come from a diverged chain; check the samples "
    "and that `model_args`/`model_kwargs` are the ones used for sampling."
)
_SCORE_HINT = (
    "The log density or its gradient is not finite there; this usually means the draws "
    "come from a diverged or stuck chain, or lie at the edge of a site's support."
)


class ModelDraws(NamedTuple):
    """Flat unconstrained draws of a NumPyro model and their scores.

    Attributes
    ----------
    x : jax.Array
        ``(*batch_shape, d)`` unconstrained draws, flattened with
        :func:`jax.flatten_util.ravel_pytree` (sites in ``site_names`` order).
    scores : jax.Array
        ``(*batch_shape, d)`` scores :math:`\\nabla_x \\log p(x)` of the unconstrained log
        density (log joint plus log-abs-det-Jacobian, i.e. minus the potential energy).
    site_names : tuple of str
        Latent sites in flattening order (sorted, as ``ravel_pytree`` orders dict keys).
    unravel : callable
        Maps one flat ``(d,)`` unconstrained vector to a dict of unconstrained site values.
    """

    x: jax.Array
    scores: jax.Array
    site_names: tuple[str, ...]
    unravel: Unravel


def latent_sites(
    model: Model,
    model_args: tuple = (),
    model_kwargs: Mapping[str, Any] | None = None,
    *,
    rng_key: jax.Array | None = None,
) -> dict[str, tuple[int, ...]]:
    """Shapes of the latent sample sites of a model.

    The model is traced once under :class:`numpyro.handlers.seed`, abstractly
    (``jax.eval_shape``, as NUTS traces it under ``jit``), so nothing is computed. Latent
    sites are the ``sample`` sites that are not observed and not marked
    ``infer={"is_auxiliary": True}``; plate, deterministic and param sites are ignored.

    Parameters
    ----------
    model : callable
        NumPyro model.
    model_args, model_kwargs : tuple, dict, optional
        Arguments the model is called with.
    rng_key : jax.Array, optional
        Unused (kept for compatibility): the trace is abstract and draws nothing.

    Returns
    -------
    dict
        ``{name: shape}`` with the (constrained) shape of one draw of each latent site,
        including plate dimensions, in flattening (sorted) order.

    Raises
    ------
    ValueError
        If a latent site is discrete (its gradient does not exist).

    Examples
    --------
    >>> import numpyro
    >>> import numpyro.distributions as dist
    >>> def model():
    ...     numpyro.sample("sigma", dist.HalfNormal(1.0))
    ...     with numpyro.plate("k", 3):
    ...         numpyro.sample("theta", dist.Normal(0.0, 1.0))
    >>> latent_sites(model)
    {'sigma': (), 'theta': (3,)}
    """
    del rng_key  # the trace is abstract: no random value is drawn
    return dict(ModelLayout(model, model_args, model_kwargs).site_shapes)


def log_density_fn(
    model: Model,
    model_args: tuple = (),
    model_kwargs: Mapping[str, Any] | None = None,
) -> tuple[Callable[[jax.Array], jax.Array], Unravel, int]:
    """Log density of a model as a function of one flat unconstrained point.

    .. math:: \\log p(x) = -U(\\mathrm{unravel}(x)),

    with :math:`U` the NumPyro potential energy (which includes the log-abs-det-Jacobian
    of the constraint transforms).

    Parameters
    ----------
    model : callable
        NumPyro model.
    model_args, model_kwargs : tuple, dict, optional
        Arguments the model is called with.

    Returns
    -------
    log_prob : callable
        ``(d,) -> ()``; jittable and differentiable.
    unravel : callable
        ``(d,) -> dict`` of unconstrained site values.
    d : int
        Dimension of the unconstrained space.

    Examples
    --------
    >>> import numpyro
    >>> import numpyro.distributions as dist
    >>> def model():
    ...     numpyro.sample("sigma", dist.HalfNormal(1.0))
    >>> log_prob, unravel, d = log_density_fn(model)
    >>> d
    1
    >>> float(jax.grad(log_prob)(jnp.zeros(d))[0])  # d/du [log HalfNormal(e^u) + u] at u=0
    0.0
    """
    layout = ModelLayout(model, model_args, model_kwargs)
    return layout.log_prob, layout.unravel, layout.dim


def model_draws(
    model: Model,
    samples: Mapping[str, Any],
    model_args: tuple = (),
    model_kwargs: Mapping[str, Any] | None = None,
    *,
    z_grad: Mapping[str, Any] | None = None,
    batch_size: int | None = None,
) -> ModelDraws:
    """Flat unconstrained draws and their scores from constrained posterior draws.

    Each draw is mapped to unconstrained space with
    :func:`numpyro.infer.util.unconstrain_fn` and flattened with ``ravel_pytree``; its
    score is :math:`s = \\nabla_x \\log p(x) = -\\nabla_x U(x)`. With ``z_grad`` (the
    gradient of the potential energy :math:`U` recorded by NUTS) the scores are
    :math:`s = -\\mathrm{ravel}(z\\_grad)` and the model is not differentiated.

    Parameters
    ----------
    model : callable
        NumPyro model used for sampling.
    samples : dict
        Constrained draws ``{site: (*batch_shape, *site_shape)}``, e.g.
        ``mcmc.get_samples()`` (``batch_shape = (draws,)``) or
        ``mcmc.get_samples(group_by_chain=True)`` (``(chains, draws)``). Keys that are not
        latent sites (deterministic sites, ...) are ignored.
    model_args, model_kwargs : tuple, dict, optional
        Arguments the model was sampled with.
    z_grad : dict, optional
        ``mcmc.get_extra_fields()["z_grad"]`` with the same grouping as ``samples``.
    batch_size : int, optional
        Draws processed at once (``jax.lax.map``); defaults to ``DEFAULT_BATCH_SIZE``.

    Returns
    -------
    ModelDraws
        ``x`` and ``scores`` of shape ``(*batch_shape, d)`` in JAX's default float dtype
        (float64 only with ``jax_enable_x64``), ``site_names``, ``unravel``.

    Raises
    ------
    ValueError
        On discrete or missing latent sites, inconsistent shapes, or non-finite draws or
        scores.

    Examples
    --------
    >>> import numpyro
    >>> import numpyro.distributions as dist
    >>> def model():
    ...     numpyro.sample("sigma", dist.HalfNormal(1.0))
    >>> draws = model_draws(model, {"sigma": jnp.ones((2, 50))})  # 2 chains x 50 draws
    >>> draws.x.shape, draws.scores.shape, draws.site_names
    ((2, 50, 1), (2, 50, 1), ('sigma',))

    With NUTS, reuse the recorded potential-energy gradients instead of differentiating:

    >>> mcmc = MCMC(NUTS(model), num_warmup=500, num_samples=500)  # doctest: +SKIP
    >>> mcmc.run(key, extra_fields=("z_grad",))  # doctest: +SKIP
    >>> draws = model_draws(  # doctest: +SKIP
    ...     model, mcmc.get_samples(), z_grad=mcmc.get_extra_fields()["z_grad"])
    """
    layout = ModelLayout(model, model_args, model_kwargs)
    values, batch_shape = _check_draws(samples, layout.site_shapes, "samples")
    bs = _batch_size(batch_size, batch_shape)
    per_draw = partial(_per_draw, model, layout, batch_ndim=len(batch_shape), batch_size=bs)
    x = per_draw(values, "flatten")
    check_finite(x, "unconstrained values", _X_HINT, batch_ndim=len(batch_shape))
    if z_grad is None:
        scores = per_draw(x, "score")
    else:
        scores = _scores_from_z_grad(z_grad, layout.unravel, layout.dim, batch_shape, bs)
    check_finite(scores, "scores", _SCORE_HINT, batch_ndim=len(batch_shape))
    return ModelDraws(x, scores, layout.site_names, layout.unravel)


def _per_draw(
    model: Model, layout: ModelLayout, tree: Any, kind: str, *, batch_ndim: int, batch_size: int
) -> jax.Array:
    """``tree``'s draws mapped by ``kind`` (:func:`_make_map`), compiled once per model and
    shapes. The model's array arguments are traced, as in NumPyro's MCMC with
    ``jit_model_args=True``; a model that needs them concrete (a 0-d array sizing a plate, a
    Python ``if`` on data) is run with them as constants instead (compiled once per argument
    object)."""
    run = _jitted_map(model)
    model_arrays, static = split_model_args(layout.model_args, layout.model_kwargs)
    try:
        return run(tree, model_arrays, static, kind, batch_ndim, batch_size)
    except jax.errors.JAXTypeError:  # a tracer where the model needs a concrete value
        leaves, treedef = jax.tree_util.tree_flatten((layout.model_args, layout.model_kwargs))
        constants = ModelArgs(treedef, tuple(leaves), (False,) * len(leaves))
        return run(tree, (), constants, kind, batch_ndim, batch_size)


def _jitted_map(model: Model | None) -> Callable[..., jax.Array]:
    """The jitted per-draw map of :func:`model_draws` for ``model``, made once per model.

    ``jax.jit`` then compiles once per distinct static part of the model's arguments
    (:func:`~numpyro_dsd.model.layout.split_model_args`), draw and argument shapes and dtypes,
    what is mapped and the batch size, so calling :func:`model_draws` again with the same
    model and shapes compiles nothing. The cache holds the model weakly: its entry (and its
    compiled programs) go when the model does. A model that cannot be weakly referenced or
    hashed gets a fresh jitted function (compiled on every call).
    """
    if model is None:
        return _Z_GRAD_MAP
    try:
        return _JITTED[model]
    except KeyError:
        pass
    except TypeError:  # not hashable, or not weakly referenceable
        return _make_map(lambda: model)
    try:
        per_draw = _make_map(weakref.ref(model))
        _JITTED[model] = per_draw
    except TypeError:
        return _make_map(lambda: model)
    return per_draw


def _make_map(get_model: Callable[[], Model | None]) -> Callable[..., jax.Array]:
    """A jitted ``run(tree, model_arrays, static, kind, batch_ndim, batch_size)``: the draws of
    ``tree`` (leaves ``(*batch_shape, ...)``, ``batch_ndim`` batch dimensions) mapped by
    ``kind`` (``"flatten"``: constrained draw to flat unconstrained, ``"score"``: the score of
    a flat point, ``"z_grad"``: minus the ravelled potential-energy gradient), returning
    ``(*batch_shape, d)``. ``jax.lax.map`` runs ``batch_size`` draws at a time (vectorised) in a
    sequential loop; jitting matters: un-jitted, its remainder batch runs op by op and is many
    times slower. The model is called with ``static.merge(model_arrays)``: array arguments are
    traced, as in NumPyro's MCMC."""

    def run(
        tree: Any, model_arrays: tuple, static: ModelArgs, kind: str, batch_ndim: int, size: int
    ) -> jax.Array:
        if kind == "z_grad":
            fn: Callable[[Any], jax.Array] = lambda g: -ravel_pytree(g)[0]  # noqa: E731
        else:
            layout = ModelLayout(get_model(), *static.merge(model_arrays))
            fn = layout.flatten if kind == "flatten" else jax.grad(layout.log_prob)
        batch_shape = jax.tree.leaves(tree)[0].shape[:batch_ndim]
        n = math.prod(batch_shape)
        flat = jax.tree.map(lambda a: a.reshape(n, *a.shape[batch_ndim:]), tree)
        out = jax.lax.map(fn, flat, batch_size=size)
        return out.reshape(*batch_shape, out.shape[-1])

    return jax.jit(run, static_argnums=(2, 3, 4, 5))


_JITTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_Z_GRAD_MAP = _make_map(lambda: None)


def _as_float(value: Any) -> jax.Array:
    # JAX's default float (float64 only with jax_enable_x64): float32 draws under x64 would
    # meet float64 constants in some NumPyro transforms (e.g. LKJCholesky) and fail.
    return jnp.asarray(value, dtype=jnp.result_type(float))


def _check_draws(
    draws: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], what: str
) -> tuple[dict[str, jax.Array], tuple[int, ...]]:
    """Check the sites of ``draws`` against ``shapes``; return them and the batch shape."""
    missing = [name for name in shapes if name not in draws]
    if missing:
        names = ", ".join(repr(name) for name in missing)
        raise ValueError(f"{what} lacks the latent site(s) {names} of the model.")
    arrays = {name: _as_float(draws[name]) for name in shapes}
    batch_shapes = {name: _batch_shape(arrays[name], shapes[name], name, what) for name in shapes}
    batch_shape = next(iter(batch_shapes.values()))
    if any(b != batch_shape for b in batch_shapes.values()):
        raise ValueError(f"the sites of {what} disagree on the batch shape: {batch_shapes}.")
    if math.prod(batch_shape) == 0:
        raise ValueError(f"{what} holds no draws (batch shape {batch_shape}).")
    return arrays, batch_shape


def _batch_shape(value: jax.Array, shape: tuple[int, ...], name: str, what: str) -> tuple[int, ...]:
    k = value.ndim - len(shape)
    if k < 0 or tuple(value.shape[k:]) != tuple(shape):
        raise ValueError(
            f"site {name!r} of {what} has shape {tuple(value.shape)}, which does not end "
            f"with the model's site shape {tuple(shape)}."
        )
    return tuple(value.shape[:k])


def _batch_size(batch_size: int | None, batch_shape: tuple[int, ...]) -> int:
    if batch_size is None:
        batch_size = DEFAULT_BATCH_SIZE
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
    return min(int(batch_size), math.prod(batch_shape))


def _scores_from_z_grad(
    z_grad: Mapping[str, Any],
    unravel: Unravel,
    d: int,
    batch_shape: tuple[int, ...],
    batch_size: int,
) -> jax.Array:
    """``-ravel(z_grad)`` per draw, ``(*batch_shape, d)``, checked against the draws."""
    template = jax.eval_shape(unravel, jax.ShapeDtypeStruct((d,), jnp.result_type(float)))
    shapes = {name: tuple(struct.shape) for name, struct in template.items()}
    grads, grad_batch = _check_draws(z_grad, shapes, "z_grad")
    if grad_batch != batch_shape:
        raise ValueError(
            f"z_grad has batch shape {grad_batch} but samples has {batch_shape}; "
            "group both by chain or neither."
        )
    _, static = split_model_args((), {})
    return _Z_GRAD_MAP(grads, (), static, "z_grad", len(batch_shape), batch_size)
