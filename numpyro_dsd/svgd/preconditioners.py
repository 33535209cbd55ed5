"""SVGD preconditioners: a change of coordinates :math:`z = T(x)` the particles move in.

Plain SVGD in :math:`z` on the pushed-forward target :math:`T_\\#p` is matrix-kernel SVGD in
:math:`x` with :math:`K(x, y) = J(x)^{-1}k(Tx, Ty)J(y)^{-\\top}` (docs/math.md §6.3). Two kinds:

- :class:`ConstantPreconditioner`: :math:`T(x) = L^\\top(x - c)` with :math:`LL^\\top = Q`,
  Wang et al. (2019)'s matrix (average Hessian of :math:`-\\log p`, the score's second moment,
  or the inverse particle covariance), re-estimated every ``every`` steps inside the jitted loop;
- :class:`FlowPreconditioner`: :math:`T` a normalizing flow (a
  :class:`~numpyro_dsd.flows.FittedFlow` from :func:`~numpyro_dsd.fit_flow`, a NumPyro
  ``Transform`` or any bijection), optionally refitted on the particles between chunks of steps.

A preconditioner is configuration; its parameters live in the SVGD state
(:class:`~numpyro_dsd.svgd.SVGDState` ``precond_params``). It has one job:
``estimate(x, log_prob) -> params`` (a pytree, jittable), ``bijection(params)`` (:math:`T` with
``transform_and_log_det``/``inverse_and_log_det``, one point at a time), ``start(u, log_prob)``
(parameters for latent initial points ``u``) and ``reestimate(params, x, log_prob, rng_key) ->
(params, record)``. *When* it is re-estimated is a separate, composable setting, as an optax
transformation wraps another: :func:`reestimate_every` gives any preconditioner the cadence
``every`` (``ConstantPreconditioner(every=k)`` and ``FlowPreconditioner(refit_every=k)`` are
sugar for it), and ``in_step`` says where the re-estimate runs: inside the jitted step
(``lax.cond``, parameters of a fixed structure: the constant matrix) or between jitted chunks
(a flow refit runs its own optimiser and may change the flow's architecture).

Examples
--------
>>> pre = reestimate_every(ConstantPreconditioner(source="fisher", every=None), 20)
>>> pre.every, pre.source, pre.in_step
(20, 'fisher', True)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from numpyro_dsd.flows.bijections import Bijection, as_bijection, inverse
from numpyro_dsd.flows.fitted import FittedFlow, FlowSpec
from numpyro_dsd.model.layout import ModelLayout, is_autoguide

__all__ = [
    "Preconditioner",
    "Linear",
    "ConstantPreconditioner",
    "FlowPreconditioner",
    "FlowParams",
    "Reestimated",
    "reestimate_every",
    "as_preconditioner",
]

LogProb = Callable[[jax.Array], jax.Array]
_SOURCES = ("hessian", "fisher", "covariance")


@runtime_checkable
class Preconditioner(Protocol):
    """What SVGD needs of a preconditioner (``PreconditionerBase`` supplies the defaults).

    Attributes
    ----------
    every : int or None
        Re-estimate every ``every`` steps (None: never); :func:`reestimate_every` sets it.
    in_step : bool
        True: :meth:`reestimate` is jittable and keeps the parameters' structure, so it runs
        inside the step under ``lax.cond``; False: it runs between jitted chunks (``SVGD.run``).
    """

    every: int | None
    in_step: bool

    def estimate(self, x: jax.Array, log_prob: LogProb) -> Any:
        """Parameters (pytree of arrays) from data-space particles ``x`` (n, d)."""
        ...

    def start(self, u: jax.Array, log_prob: LogProb) -> Any:
        """Parameters for latent initial points ``u`` (n, d): particles start at
        :math:`T^{-1}(u)`."""
        ...

    def reestimate(
        self, params: Any, x: jax.Array, log_prob: LogProb, rng_key: jax.Array | None
    ) -> tuple[Any, Any]:
        """New parameters from data-space particles ``x`` and a record of how they were made
        (a :class:`~numpyro_dsd.flows.FlowFit` for a flow refit, else None)."""
        ...

    def bijection(self, params: Any) -> Bijection:
        """:math:`T` (data to latent) for these parameters."""
        ...


class PreconditionerBase(ABC):
    """Defaults for :class:`Preconditioner`: never re-estimated, re-estimates inside the step,
    :meth:`start` and :meth:`reestimate` are :meth:`estimate`, and the flat coordinates need no
    model (:meth:`in_layout` is the identity). Subclasses give :meth:`estimate` and
    :meth:`bijection`."""

    every: int | None = None
    in_step: bool = True

    @abstractmethod
    def estimate(self, x: jax.Array, log_prob: LogProb) -> Any:
        """Parameters (pytree of arrays) from data-space particles ``x`` (n, d)."""

    @abstractmethod
    def bijection(self, params: Any) -> Bijection:
        """:math:`T` (data to latent) for these parameters."""

    def in_layout(self, layout: ModelLayout) -> Preconditioner:
        """This preconditioner in the coordinates of ``layout`` (a model's flat unconstrained
        space); only a flow given in another order (an autoguide) changes."""
        return self

    def start(self, u: jax.Array, log_prob: LogProb) -> Any:
        return jax.jit(lambda a: self.estimate(a, log_prob))(u)

    def reestimate(
        self, params: Any, x: jax.Array, log_prob: LogProb, rng_key: jax.Array | None
    ) -> tuple[Any, Any]:
        return self.estimate(x, log_prob), None


class Reestimated(PreconditionerBase):
    """``base`` with the cadence ``every`` (:func:`reestimate_every`): everything else, and any
    attribute of ``base`` (``source``, ``flow``, ...), is ``base``'s."""

    def __init__(self, base: Preconditioner, every: int | None):
        _check_every(every, "every")
        self.base, self.every = base, every

    @property
    def in_step(self) -> bool:  # type: ignore[override]
        return self.base.in_step

    def estimate(self, x: jax.Array, log_prob: LogProb) -> Any:
        return self.base.estimate(x, log_prob)

    def start(self, u: jax.Array, log_prob: LogProb) -> Any:
        return self.base.start(u, log_prob)

    def reestimate(
        self, params: Any, x: jax.Array, log_prob: LogProb, rng_key: jax.Array | None
    ) -> tuple[Any, Any]:
        return self.base.reestimate(params, x, log_prob, rng_key)

    def bijection(self, params: Any = ()) -> Bijection:
        return self.base.bijection(params)

    def in_layout(self, layout: ModelLayout) -> Preconditioner:
        base = self.base.in_layout(layout)
        return self if base is self.base else Reestimated(base, self.every)

    def __getattr__(self, name: str) -> Any:
        if name == "base":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.base, name)

    def __repr__(self) -> str:
        return f"reestimate_every({self.base!r}, {self.every})"


class _Adapted(PreconditionerBase):
    """An object with only ``estimate``, ``bijection`` and optionally ``every`` (what earlier
    versions asked of a preconditioner): ``PreconditionerBase`` supplies the rest."""

    def __init__(self, obj: Any):
        self.obj = obj
        self.every = getattr(obj, "every", None)
        _check_every(self.every, "every")

    def estimate(self, x: jax.Array, log_prob: LogProb) -> Any:
        return self.obj.estimate(x, log_prob)

    def bijection(self, params: Any = ()) -> Bijection:
        return self.obj.bijection(params)

    def __repr__(self) -> str:
        return repr(self.obj)


def as_preconditioner(obj: Any) -> Preconditioner | None:
    """``obj`` as a :class:`Preconditioner`: None and full preconditioners as they are; an object
    with only ``estimate(x, log_prob)`` and ``bijection(params)`` (and optionally ``every``)
    completed with the defaults of ``PreconditionerBase`` (re-estimated inside the step,
    started by ``estimate``).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> class Scale:
    ...     every = 10
    ...     def estimate(self, x, log_prob):
    ...         return jnp.std(x, axis=0)
    ...     def bijection(self, params):
    ...         return Linear(jnp.eye(params.shape[0]), 1.0 / params, jnp.zeros_like(params))
    >>> pre = as_preconditioner(Scale())
    >>> pre.every, pre.in_step
    (10, True)
    """
    if obj is None or isinstance(obj, Preconditioner):
        return obj
    if hasattr(obj, "estimate") and hasattr(obj, "bijection"):
        return _Adapted(obj)
    raise ValueError(
        f"{type(obj).__name__} is not a preconditioner: it needs estimate(x, log_prob) -> params "
        "and bijection(params) -> T (see numpyro_dsd.svgd.preconditioners)."
    )


def reestimate_every(preconditioner: Preconditioner, every: int | None) -> Reestimated:
    """``preconditioner`` re-estimated every ``every`` steps (None: never), like an optax
    wrapper: the outermost cadence wins.

    The step counts re-estimates at steps ``every, 2 every, ...``: particles are pulled back
    (:math:`x = T_{\\text{old}}^{-1}(z)`), the parameters re-estimated on them with the key
    ``fold_in(state.rng_key, step)``, the particles re-mapped
    (:math:`z = T_{\\text{new}}(x)`), the kernel's bandwidth re-set and the optimizer state
    reset (its statistics belong to the old coordinates).

    Examples
    --------
    >>> pre = reestimate_every(FlowPreconditioner(refit_every=None), 50)
    >>> pre.every, pre.in_step
    (50, False)
    """
    return Reestimated(preconditioner, every)


def unwrap(preconditioner: Any) -> Any:
    """The preconditioner under any :func:`reestimate_every` wrappers."""
    while isinstance(preconditioner, Reestimated):
        preconditioner = preconditioner.base
    return preconditioner


@jax.tree_util.register_pytree_node_class
class FlowParams:
    """A :class:`~numpyro_dsd.flows.FittedFlow` as SVGD state: its arrays are the pytree's
    leaves and its :class:`~numpyro_dsd.flows.FlowSpec` the static aux data, so a jitted step
    retraces only when the architecture changes (a refit from a NeuTra generator to a fitted
    normalizer), never when the arrays do.

    Examples
    --------
    >>> import jax
    >>> from numpyro_dsd.flows.fitting import fit_flow_to_samples
    >>> fit = fit_flow_to_samples(jax.random.normal(jax.random.key(0), (50, 2)), num_steps=2,
    ...                           progress_bar=False)
    >>> params = FlowParams.of(fit.flow)
    >>> leaves, treedef = jax.tree.flatten(params)
    >>> jax.tree.unflatten(treedef, leaves).flow.spec == fit.flow.spec
    True
    """

    __slots__ = ("spec", "params", "loc", "scale")

    def __init__(self, spec: FlowSpec, params: Any, loc: Any, scale: Any):
        self.spec, self.params, self.loc, self.scale = spec, params, loc, scale

    @classmethod
    def of(cls, flow: FittedFlow) -> FlowParams:
        """The state form of ``flow``."""
        return cls(flow.spec, flow.params, flow.loc, flow.scale)

    @property
    def flow(self) -> FittedFlow:
        """The :class:`~numpyro_dsd.flows.FittedFlow` (to save, or ``flow.diffusion()``)."""
        return FittedFlow(self.spec, self.params, self.loc, self.scale)

    def tree_flatten(self) -> tuple[tuple[Any, Any, Any], FlowSpec]:
        return (self.params, self.loc, self.scale), self.spec

    @classmethod
    def tree_unflatten(cls, spec: FlowSpec, children: tuple[Any, Any, Any]) -> FlowParams:
        return cls(spec, *children)

    def __repr__(self) -> str:
        return f"FlowParams({self.spec})"


class Linear(NamedTuple):
    """:math:`T(x) = L^\\top(x - c)` with :math:`L = V\\mathrm{diag}(w)`, :math:`V` orthogonal, so
    :math:`T^{-1}(z) = c + V(z/w)` needs no solve and :math:`\\log|\\det J| = \\sum\\log w`.

    The centre :math:`c` does not change SVGD (its kernels are translation invariant); it says
    where latent initial particles start.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> T = Linear(jnp.eye(2), jnp.array([2.0, 0.5]), jnp.zeros(2))
    >>> T.transform_and_log_det(jnp.ones(2))[0], T.inverse_and_log_det(jnp.ones(2))[0]
    (Array([2. , 0.5], dtype=float32), Array([0.5, 2. ], dtype=float32))
    """

    V: jax.Array
    w: jax.Array
    c: jax.Array

    def transform_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.w * (self.V.T @ (x - self.c)), jnp.sum(jnp.log(self.w))

    def inverse_and_log_det(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.c + self.V @ (z / self.w), -jnp.sum(jnp.log(self.w))


_BACKTRACK = 8  # damped Newton: step lengths 1, 1/2, ..., 2^-7


class ConstantPreconditioner(PreconditionerBase):
    """Wang et al. (2019)'s constant matrix preconditioner :math:`Q`, as :math:`T(x) = L^\\top x`.

    SVGD in :math:`z = L^\\top x` is matrix SVGD with
    :math:`K(x,y) = Q^{-1}k(L^\\top x, L^\\top y)`;
    for a Gaussian target and ``source="hessian"`` it runs on the exactly whitened target.

    Parameters
    ----------
    source : {"hessian", "fisher", "covariance"}
        :math:`Q = \\frac1n\\sum_i -\\nabla^2\\log p(x_i)` (``jax.hessian`` per particle,
        symmetrised), :math:`\\frac1n\\sum_i s_is_i^\\top` (the Fisher identity's other side;
        cheap), or :math:`\\widehat{\\mathrm{Cov}}(x)^{-1}` (needs n > d).
    every : int, optional
        Re-estimate every ``every`` steps, inside the jitted step (default 100; None: only at the
        start): sugar for ``reestimate_every(ConstantPreconditioner(..., every=None), every)``.
        The particles are re-mapped and the optimizer state reset, since its statistics belong to
        the old coordinates.
    floor : float
        :math:`Q` is made positive definite by taking absolute eigenvalues (an indefinite average
        Hessian, e.g. away from the mode of a funnel, stays usable: "saddle-free" Newton) and
        clipping them below at ``floor`` times the largest.
    init_rounds : int
        The ``SVGD`` class's initial estimate (``source`` ``"hessian"`` or ``"fisher"``): after
        estimating at the initial box :math:`u`, re-estimate ``init_rounds`` times at the
        particles :math:`T^{-1}(u)`, each a damped Newton step of the centre, so the particles
        start near the mode with the local scales even when the box is far from the posterior
        (a regression coefficient at 26 with sd 6, a noise scale with sd 0.001: 20 rounds in
        docs/validation.md). Default 0: on a funnel the mode is the neck, where Newton steps lead.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> pre = ConstantPreconditioner()
    >>> params = pre.estimate(jnp.zeros((3, 2)), lambda x: -0.5 * (x[0]**2 + 100 * x[1]**2))
    >>> sorted(float(w) for w in params.w)  # sqrt of the eigenvalues of Q = diag(1, 100)
    [1.0, 10.0]
    """

    def __init__(
        self,
        source: str = "hessian",
        every: int | None = 100,
        floor: float = 1e-6,
        init_rounds: int = 0,
    ):
        if source not in _SOURCES:
            raise ValueError(f"source must be one of {_SOURCES}; got {source!r}.")
        _check_every(every, "every")
        if init_rounds < 0:
            raise ValueError(f"init_rounds must be >= 0; got {init_rounds}.")
        self.source, self.every, self.floor = source, every, float(floor)
        self.init_rounds = int(init_rounds) if source != "covariance" else 0

    def __repr__(self) -> str:
        return f"ConstantPreconditioner(source={self.source!r}, every={self.every})"

    def matrix(self, x: jax.Array, log_prob: LogProb) -> jax.Array:
        """:math:`Q` (d, d) from particles ``x`` (n, d)."""
        if self.source == "hessian":
            return -jnp.mean(jax.vmap(jax.hessian(log_prob))(x), axis=0)
        if self.source == "fisher":
            s = jax.vmap(jax.grad(log_prob))(x)
            return s.T @ s / x.shape[0]
        if x.shape[0] <= x.shape[1]:
            raise ValueError(
                f"source='covariance' needs more particles than dimensions (n={x.shape[0]}, "
                f"d={x.shape[1]}); use source='hessian' or more particles."
            )
        return jnp.linalg.pinv(jnp.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1]))

    def estimate(self, x: jax.Array, log_prob: LogProb) -> Linear:
        """:math:`L` from :meth:`matrix` with eigenvalues :math:`|\\lambda|` floored (saddle-free),
        centred at the damped Newton point :math:`c = \\bar x + t\\,Q^{-1}\\bar s` (the mode,
        for a Gaussian), :math:`t` the first of :math:`1, \\frac12, \\dots, 2^{-7}` with
        :math:`\\log p(c) \\ge \\log p(\\bar x)`, else at :math:`\\bar x`."""
        Q = self.matrix(x, log_prob)
        lam, V = jnp.linalg.eigh(0.5 * (Q + Q.T))
        lam = jnp.maximum(jnp.abs(lam), self.floor * jnp.max(jnp.abs(lam)))
        mean = jnp.mean(x, axis=0)
        s = jnp.mean(jax.vmap(jax.grad(log_prob))(x), axis=0)
        step = V @ ((V.T @ s) / lam)
        candidates = mean + (0.5 ** jnp.arange(_BACKTRACK))[:, None] * step
        better = jax.vmap(log_prob)(candidates) >= log_prob(mean)  # False for NaN too
        centre = jnp.where(jnp.any(better), candidates[jnp.argmax(better)], mean)
        return Linear(V, jnp.sqrt(lam), centre)

    def start(self, u: jax.Array, log_prob: LogProb) -> Linear:
        """:meth:`estimate` at the latent box ``u``, then ``init_rounds`` times at the particles
        :math:`T^{-1}(u)` it gives (damped Newton steps of the centre towards the mode)."""
        estimate = jax.jit(lambda a: self.estimate(a, log_prob))
        params = estimate(u)
        for _ in range(self.init_rounds):
            params = estimate(jax.vmap(params.inverse_and_log_det)(u)[0])
        return params

    def bijection(self, params: Linear) -> Linear:
        return params


class FlowPreconditioner(PreconditionerBase):
    """A normalizing flow as the preconditioner: SVGD runs in its latent space (NeuTra-style).

    Parameters
    ----------
    flow : FittedFlow, NumPyro Transform, bijection, or (guide, params)
        :math:`T`, data (the model's flat unconstrained space) to latent. A
        :class:`~numpyro_dsd.flows.FittedFlow` (from :func:`~numpyro_dsd.fit_flow` or
        :func:`~numpyro_dsd.fit_flow_to_samples`) is used through its cheap direction. A fitted
        NumPyro autoguide with a transform (``AutoIAFNormal``, ``AutoBNAFNormal`` has no inverse)
        is given as ``(guide, params)``: ``guide.get_transform(params)`` is the generator
        :math:`G = T^{-1}`. None (the ``SVGD`` class only): fit one with
        :func:`~numpyro_dsd.fit_flow` at ``init``.
    fit_kwargs : dict, optional
        Passed to :func:`~numpyro_dsd.fit_flow` when ``flow`` is None.
    refit_every : int, optional
        Refit the flow on the pulled-back particles every ``refit_every`` steps
        (:func:`~numpyro_dsd.fit_flow_to_samples`, a masked autoregressive flow by maximum
        likelihood, keyed ``fold_in(state.rng_key, step)``), re-map them and reset the optimizer.
        A refit runs between jitted chunks (``SVGD.run``). Sugar for
        ``reestimate_every(FlowPreconditioner(...), refit_every)``; None (default): the flow
        stays.
    refit_kwargs : dict, optional
        Passed to :func:`~numpyro_dsd.fit_flow_to_samples` (default 500 steps, no minibatches).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from numpyro.distributions.transforms import AffineTransform
    >>> pre = FlowPreconditioner(AffineTransform(0.0, 2.0))  # z = 2x
    >>> pre.bijection(()).inverse_and_log_det(jnp.ones(2))[0]
    Array([0.5, 0.5], dtype=float32)
    """

    in_step = False  # a refit runs an optimiser and may change the flow's architecture

    def __init__(
        self,
        flow: object = None,
        fit_kwargs: dict[str, Any] | None = None,
        refit_every: int | None = None,
        refit_kwargs: dict[str, Any] | None = None,
    ):
        _check_every(refit_every, "refit_every")
        self.flow = flow
        self.fit_kwargs = dict(fit_kwargs or {})
        self.every = refit_every
        self.refit_kwargs = {"num_steps": 500, "batch_size": None, **(refit_kwargs or {})}
        given = not (flow is None or isinstance(flow, FittedFlow) or is_autoguide(flow))
        self._bijection = as_bijection(flow) if given else None

    @property
    def refit_every(self) -> int | None:
        """The refit cadence (``every``)."""
        return self.every

    def with_flow(self, flow: object) -> FlowPreconditioner:
        """The same settings with another flow."""
        return FlowPreconditioner(flow, self.fit_kwargs, self.refit_every, self.refit_kwargs)

    def in_layout(self, layout: ModelLayout) -> FlowPreconditioner:
        """A fitted autoguide ``(guide, params)`` flattens the sites in the order the model
        declares them: its generator is permuted into ``layout``'s order
        (:meth:`~numpyro_dsd.model.ModelLayout.autoguide_generator`). Other flows are already
        in the flat coordinates."""
        if not is_autoguide(self.flow):
            return self
        return self.with_flow(inverse(layout.autoguide_generator(*self.flow)))

    def __repr__(self) -> str:
        what = "unfitted" if self.flow is None else type(self.flow).__name__
        return f"FlowPreconditioner({what})"

    def estimate(self, x: jax.Array, log_prob: LogProb) -> FlowParams | tuple:
        """:class:`~numpyro_dsd.svgd.preconditioners.FlowParams` of a ``FittedFlow``, else ``()``
        (the flow object is then part of
        the configuration): the arrays live in the SVGD state, so a state always maps back
        through the flow that made it."""
        if isinstance(self.flow, FittedFlow):
            return FlowParams.of(self.flow)
        return ()

    def reestimate(
        self, params: Any, x: jax.Array, log_prob: LogProb, rng_key: jax.Array | None
    ) -> tuple[FlowParams, Any]:
        """Refit on the data-space particles ``x``: :func:`~numpyro_dsd.fit_flow_to_samples`
        with ``refit_kwargs`` and ``rng_key``; returns the new
        :class:`~numpyro_dsd.svgd.preconditioners.FlowParams` (a normalizer)
        and the :class:`~numpyro_dsd.flows.FlowFit`."""
        from numpyro_dsd.flows.fitting import fit_flow_to_samples

        if rng_key is None:
            raise ValueError(
                "A flow refit needs a random key: give rng_key to numpyro_dsd.svgd.init (the "
                "SVGD class derives it from run's key)."
            )
        fit = fit_flow_to_samples(x, rng_key=rng_key, progress_bar=False, **self.refit_kwargs)
        return FlowParams.of(fit.flow), fit

    def bijection(self, params: Any = ()) -> Bijection:
        """:math:`T` for ``params`` from the state
        (:class:`~numpyro_dsd.svgd.preconditioners.FlowParams`), or the flow given."""
        if isinstance(params, FlowParams):
            return as_bijection(params.flow.transform())
        if isinstance(self.flow, FittedFlow):
            return as_bijection(self.flow.transform())
        if is_autoguide(self.flow):
            raise ValueError(
                "A (guide, params) flow is in the model's declaration order: put it in the "
                "model's flat coordinates first, preconditioner.in_layout(ModelLayout(model, "
                "model_args)) (numpyro_dsd.SVGD does this for you)."
            )
        if self._bijection is None:
            raise ValueError(
                "This FlowPreconditioner has no flow yet: give one (FlowPreconditioner(fit.flow) "
                "with fit = numpyro_dsd.fit_flow(model, ...)), or let numpyro_dsd.SVGD fit it "
                "in init()."
            )
        return self._bijection


def _check_every(value: object, name: str) -> None:
    if value is not None and not (isinstance(value, int) and value >= 1):
        raise ValueError(f"{name} must be an integer >= 1 or None; got {value!r}.")
