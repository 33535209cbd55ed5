"""The flat unconstrained layout of a NumPyro model: the one owner of how a model is flattened.

Every path that turns a model's latent sites into a vector and back (scores for the KSD, the
diagnostic, flow fitting, a fitted autoguide used as a flow, SVGD's particles and
``get_samples``) goes through :class:`ModelLayout`, so they all agree on the coordinates:

- **sites**: the latent ``sample`` sites (not observed, not ``is_auxiliary``), in *sorted* name
  order, each flattened in C order after mapping to unconstrained space
  (``biject_to(support).inv``) — what :func:`jax.flatten_util.ravel_pytree` does to the dict of
  unconstrained values;
- **declaration order**: the order the model samples its sites, which is how NumPyro's
  autoguides (``AutoIAFNormal``, ``AutoBNAFNormal``, ...) flatten them;
  :meth:`ModelLayout.from_declared` permutes such a vector into the layout's order;
- **density**: :math:`\\log p(x) = -U(\\mathrm{unravel}(x))`, NumPyro's potential energy, which
  includes the log absolute Jacobian determinant of the constraint transforms (docs/math.md §0).

The model is traced abstractly (``jax.eval_shape``), as NUTS traces it under ``jit``, so building
a layout computes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.distributions.transforms import ComposeTransform, PermuteTransform, Transform
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.util import constrain_fn, potential_energy, unconstrain_fn

__all__ = ["ModelLayout", "ModelArgs", "split_model_args", "is_autoguide"]

Model = Callable[..., Any]
Unravel = Callable[[jax.Array], dict[str, jax.Array]]


class ModelLayout:
    """How one NumPyro model, called with given arguments, is laid out as a flat vector.

    Parameters
    ----------
    model : callable
        NumPyro model with continuous latent sites.
    model_args : tuple
        Positional arguments of the model.
    model_kwargs : dict, optional
        Keyword arguments of the model.
    dtype : dtype, optional
        Float dtype of the flat vector; default JAX's default float (float64 only with
        ``jax_enable_x64``).

    Attributes
    ----------
    site_names : tuple of str
        Latent sites in flattening (sorted) order.
    site_shapes : dict
        ``{name: shape}`` of one constrained draw of each site.
    declared_names : tuple of str
        The same sites in the order the model samples them.
    dim : int
        :math:`d`, the length of the flat unconstrained vector.

    Raises
    ------
    ValueError
        If a latent site is discrete, or the model has no latent sites.

    Examples
    --------
    A model that declares ``b`` (a 2-vector) before ``a`` (positive):

    >>> import numpyro, numpyro.distributions as dist
    >>> def model():
    ...     numpyro.sample("b", dist.Normal(0.0, 1.0).expand([2]))
    ...     numpyro.sample("a", dist.HalfNormal(1.0))
    >>> layout = ModelLayout(model)
    >>> layout.site_names, layout.declared_names, layout.dim
    (('a', 'b'), ('b', 'a'), 3)
    >>> x = layout.flatten({"a": 1.0, "b": jnp.array([2.0, 3.0])})  # a first, as log(1.0)
    >>> x
    Array([0., 2., 3.], dtype=float32)
    >>> layout.from_declared(jnp.array([2.0, 3.0, 0.0]))  # an autoguide's order: b, then a
    Array([0., 2., 3.], dtype=float32)
    >>> {k: v.tolist() for k, v in sorted(layout.constrain(x).items())}
    {'a': 1.0, 'b': [2.0, 3.0]}
    """

    def __init__(
        self,
        model: Model,
        model_args: tuple = (),
        model_kwargs: Mapping[str, Any] | None = None,
        *,
        dtype: Any = None,
    ):
        self.model = model
        self.model_args = tuple(model_args)
        self.model_kwargs = {} if model_kwargs is None else dict(model_kwargs)
        dtype = jnp.result_type(float) if dtype is None else dtype
        structs, declared = _latent_structs(model, self.model_args, self.model_kwargs)
        self._structs = {k: jax.ShapeDtypeStruct(v.shape, dtype) for k, v in structs.items()}
        self.site_names = tuple(self._structs)
        self.site_shapes = {k: tuple(v.shape) for k, v in self._structs.items()}
        self.declared_names = declared
        self.unravel, self.dim = self._find_unravel()
        template = jax.eval_shape(self.unravel, jax.ShapeDtypeStruct((self.dim,), dtype))
        self.unconstrained_shapes = {k: tuple(v.shape) for k, v in template.items()}

    def __repr__(self) -> str:
        sites = ", ".join(f"{k}{list(s)}" for k, s in self.unconstrained_shapes.items())
        return f"ModelLayout(dim={self.dim}, sites=[{sites}])"

    # ---- the density --------------------------------------------------------------------
    @property
    def seeded_model(self) -> Model:
        """The model under a fixed seed: models that call ``numpyro.prng_key()`` become
        traceable; every latent site is substituted, so no random value enters the density."""
        return handlers.seed(self.model, rng_seed=0)

    def log_prob(self, x: jax.Array) -> jax.Array:
        """:math:`\\log p(x) = -U(\\mathrm{unravel}(x))` for one flat point ``x`` (d,);
        jittable and differentiable."""
        model, args, kwargs = self.seeded_model, self.model_args, self.model_kwargs
        return -potential_energy(model, args, kwargs, self.unravel(x))

    # ---- flat <-> sites -----------------------------------------------------------------
    def unconstrain(self, values: Mapping[str, Any]) -> dict[str, jax.Array]:
        """Unconstrained site values of one constrained draw ``{site: value}`` (extra keys,
        e.g. deterministic sites, are ignored)."""
        params = {k: jnp.asarray(values[k], self._structs[k].dtype) for k in self.site_names}
        return unconstrain_fn(self.seeded_model, self.model_args, self.model_kwargs, params)

    def flatten(self, values: Mapping[str, Any]) -> jax.Array:
        """The flat unconstrained vector (d,) of one constrained draw ``{site: value}``."""
        return ravel_pytree(self.unconstrain(values))[0]

    def constrain(self, x: jax.Array, *, deterministic: bool = True) -> dict[str, jax.Array]:
        """Constrained site values of one flat point ``x`` (d,), with the deterministic sites
        (``deterministic=True``): the form :class:`numpyro.infer.Predictive` takes."""
        model, args, kwargs = self.seeded_model, self.model_args, self.model_kwargs
        unravelled = self.unravel(x)
        return constrain_fn(model, args, kwargs, unravelled, return_deterministic=deterministic)

    # ---- other orders -------------------------------------------------------------------
    def declared_permutation(self) -> np.ndarray:
        """``perm`` (d,) with ``v[perm]`` in the layout's order for a vector ``v`` flattened
        in the model's declaration order (as NumPyro's autoguides flatten)."""
        start, positions = 0, {}
        for name in self.declared_names:
            size = int(np.prod(self.unconstrained_shapes[name], dtype=int))
            positions[name] = np.arange(start, start + size)
            start += size
        return np.concatenate([positions[name] for name in self.site_names]).astype(np.int32)

    def from_declared(self, v: jax.Array) -> jax.Array:
        """``v`` (..., d) in declaration order, permuted into the layout's order."""
        return jnp.asarray(v)[..., self.declared_permutation()]

    def to_declared(self, x: jax.Array) -> jax.Array:
        """``x`` (..., d) in the layout's order, permuted into declaration order."""
        return jnp.asarray(x)[..., np.argsort(self.declared_permutation())]

    def autoguide_generator(self, guide: Any, params: Mapping[str, Any]) -> Transform:
        """The generator :math:`G` (latent to flat unconstrained, in the layout's order) of a
        fitted NumPyro autoguide with a transform (``AutoIAFNormal``, ``AutoBNAFNormal``, ...).

        ``guide.get_transform(params)`` flattens in declaration order; this appends the
        permutation, so ``FlowDiffusion.from_generator(layout.autoguide_generator(guide,
        params))`` and SVGD's flow preconditioner act on the same coordinates as
        :func:`~numpyro_dsd.model.targets.model_draws`.
        """
        G = guide.get_transform(params)
        perm = self.declared_permutation()
        if np.array_equal(perm, np.arange(self.dim)):
            return G
        return ComposeTransform([G, PermuteTransform(jnp.asarray(perm))])

    def _find_unravel(self) -> tuple[Unravel, int]:
        """``ravel_pytree``'s unravel for the unconstrained sites, found abstractly."""
        unravels: list[Unravel] = []

        def flatten(params: dict[str, jax.Array]) -> jax.Array:
            model, args, kwargs = self.seeded_model, self.model_args, self.model_kwargs
            flat, unravel = ravel_pytree(unconstrain_fn(model, args, kwargs, params))
            unravels.append(unravel)  # holds only sizes, shapes and dtypes, no tracers
            return flat

        flat = jax.eval_shape(flatten, dict(self._structs))
        return unravels[0], int(flat.shape[0])


class ModelArgs:
    """The non-array part of a model's arguments: hashable, so it can be a static argument of
    ``jax.jit`` (see :func:`split_model_args`). Leaves that are not hashable compare by identity.
    """

    def __init__(self, treedef: Any, leaves: tuple, is_array: tuple[bool, ...]):
        self.treedef, self.leaves, self.is_array = treedef, leaves, is_array
        self._key = (treedef, is_array, tuple(_Hashed(v) for v in leaves))

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelArgs) and self._key == other._key

    def merge(self, arrays: tuple) -> tuple[tuple, dict[str, Any]]:
        """``(args, kwargs)`` with the array leaves put back."""
        it = iter(arrays)
        leaves = [next(it) if a else v for v, a in zip(self.leaves, self.is_array, strict=True)]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


class _Hashed:
    """A leaf compared by value when it is hashable, else by identity."""

    def __init__(self, value: Any):
        self.value = value
        try:
            self._hash = hash((type(value), value))
            self._by_value = True
        except TypeError:
            self._hash, self._by_value = id(value), False

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Hashed) or self._by_value != other._by_value:
            return False
        if self._by_value:
            return type(self.value) is type(other.value) and bool(self.value == other.value)
        return self.value is other.value


def split_model_args(args: tuple, kwargs: Mapping[str, Any]) -> tuple[tuple, ModelArgs]:
    """Split a model's arguments as NumPyro's MCMC treats them: arrays (JAX or NumPy) may be
    traced, everything else (Python ints such as a ``numpyro.plate`` size, strings, shapes,
    None, Python and NumPy scalars) stays a concrete Python value, so a jitted function
    compiles once per distinct static value.

    Returns ``(arrays, static)``: pass ``arrays`` to a jitted function as a traced argument and
    ``static`` as a static one, and call the model with ``static.merge(arrays)``.

    Examples
    --------
    >>> import numpy as np
    >>> arrays, static = split_model_args((8, np.ones(8)), {"y": None})
    >>> len(arrays), static.merge(arrays)[0][0]
    (1, 8)
    >>> hash(static) == hash(split_model_args((8, np.zeros(8)), {"y": None})[1])
    True
    """
    leaves, treedef = jax.tree_util.tree_flatten((tuple(args), dict(kwargs)))
    is_array = tuple(isinstance(v, (jax.Array, np.ndarray)) for v in leaves)
    arrays = tuple(v for v, a in zip(leaves, is_array, strict=True) if a)
    static = tuple(None if a else v for v, a in zip(leaves, is_array, strict=True))
    return arrays, ModelArgs(treedef, static, is_array)


def is_autoguide(obj: object) -> bool:
    """Whether ``obj`` is a fitted NumPyro autoguide with a transform given as
    ``(guide, params)``: a flow in the model's declaration order, which
    :meth:`ModelLayout.autoguide_generator` puts in the layout's order."""
    return isinstance(obj, tuple) and len(obj) == 2 and hasattr(obj[0], "get_transform")


def _is_latent(site: dict[str, Any]) -> bool:
    return (
        site["type"] == "sample"
        and not site["is_observed"]
        and not site["infer"].get("is_auxiliary", False)
    )


def _is_discrete(site: dict[str, Any]) -> bool:
    fn = site["fn"]
    return bool(fn.support.is_discrete or getattr(fn, "has_enumerate_support", False))


def _latent_structs(
    model: Model, args: tuple, kwargs: dict[str, Any]
) -> tuple[dict[str, jax.ShapeDtypeStruct], tuple[str, ...]]:
    """Shapes of the latent sites (sorted) and their declaration order; raises on discrete or
    no latent sites. Only Python booleans and names leave the abstract trace."""
    discrete: list[str] = []
    declared: list[str] = []

    def run(key: jax.Array) -> dict[str, jax.Array]:
        # init_to_uniform gives values also to sites that cannot be sampled (ImproperUniform)
        seeded = handlers.substitute(handlers.seed(model, key), substitute_fn=init_to_uniform)
        tr = handlers.trace(seeded).get_trace(*args, **kwargs)
        sites = {name: site for name, site in tr.items() if _is_latent(site)}
        declared.extend(sites)
        discrete.extend(name for name, site in sites.items() if _is_discrete(site))
        return {name: jnp.asarray(site["value"]) for name, site in sites.items()}

    structs = jax.eval_shape(run, jax.random.PRNGKey(0))
    if discrete:
        names = ", ".join(repr(name) for name in discrete)
        raise ValueError(
            f"numpyro_dsd needs gradients of the log density; the latent site(s) {names} "
            "are discrete. Marginalise them out in the model (e.g. with "
            "dist.MixtureSameFamily or a numpyro.factor of a logsumexp; numpyro.contrib."
            "funsor enumeration alone leaves them in the model), or fix them with "
            "numpyro.handlers.condition."
        )
    if not structs:
        raise ValueError("the model has no latent (unobserved) sample sites.")
    return {name: structs[name] for name in sorted(structs)}, tuple(declared)
