"""SVGD for NumPyro models, with NumPyro's ``init``/``update``/``run`` loop (:class:`SVGD`).

Particles live in the model's flat unconstrained space (sites in sorted order, as
:func:`numpyro_dsd.model.targets.log_density_fn` flattens them), or in a preconditioner's latent
space (:mod:`numpyro_dsd.svgd.preconditioners`); :meth:`SVGD.get_samples` hands back constrained
values, ``{site: (num_particles, ...)}``, ready for :class:`numpyro.infer.Predictive`. The
numerical work is :mod:`numpyro_dsd.svgd`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from numpyro_dsd.arviz.convert import from_svgd
from numpyro_dsd.flows.bijections import check_flow_dim
from numpyro_dsd.flows.fitting import FlowFit, fit_flow
from numpyro_dsd.flows.quality import FlowFitError
from numpyro_dsd.model.layout import ModelArgs, ModelLayout, split_model_args
from numpyro_dsd.stein.kernels import IMQ, Gaussian
from numpyro_dsd.svgd import core
from numpyro_dsd.svgd.finishing import FINISH_KERNELS, finish
from numpyro_dsd.svgd.preconditioners import (
    ConstantPreconditioner,
    FlowParams,
    FlowPreconditioner,
    Preconditioner,
    as_preconditioner,
    unwrap,
)

__all__ = [
    "SVGD",
    "SVGDRunResult",
    "SVGDDivergenceWarning",
    "NonFiniteStepError",
    "SVGDInterrupted",
    "default_flow_fit",
]

Model = Callable[..., Any]


def default_flow_fit() -> dict[str, Any]:
    """How ``preconditioner="flow"`` fits its NeuTra flow (:func:`~numpyro_dsd.fit_flow`): 5000
    steps of Adam with the step size decaying from 3e-2 to 3e-4, 8 ELBO particles. If that fit
    diverges (:class:`~numpyro_dsd.flows.quality.FlowFitError`, from
    :func:`~numpyro_dsd.flows.quality.loss_problem`: on a horseshoe regression with d = 22,
    benchmarks/svgd_models.py, most losses were not finite; on N(0, I) with d = 100 the loss
    blew up; on a 50-d rotated Gaussian it rose from 37 to 4064 and ended at 651, above its
    start) and no ``optim`` was given, ``SVGD`` fits again with ``fit_flow``'s default
    optimiser, whose step shrinks with d and backs off.

    Stronger than ``fit_flow``'s default because SVGD inherits the flow's conditioning: on a
    10-d Gaussian with condition number 1e4 the default fit ends at KL 8.4 and flow SVGD's
    whitened mean error is 0.99; this one ends at KL 0.7 and 0.06 (5 s of fitting).
    """
    return {
        "num_steps": 5000,
        "optim": optax.adam(optax.exponential_decay(3e-2, 5000, 1e-2, end_value=3e-4)),
        "num_particles": 8,
    }


class SVGDRunResult(NamedTuple):
    """What :meth:`SVGD.run` returns.

    Attributes
    ----------
    particles : (num_particles, d)
        Flat unconstrained particles in the data space (pulled back through the
        preconditioner), after the finish (:func:`numpyro_dsd.svgd.finish`) when the run has one.
    state : SVGDState
        The chain's state, before any finish: ``run(..., init_state=result.state)`` continues
        exactly.
    stein_force : (num_steps,)
        Root mean square force :math:`\\|\\phi\\|` per step.
    ksd_squared : (num_steps,)
        KSD² V-statistic of the particles per step (:class:`~numpyro_dsd.svgd.SVGDInfo`).
    flow_fit : FlowFit or None
        The fit of the flow the final state uses, when this call made it (the NeuTra fit of
        ``preconditioner="flow"`` at ``init``, or the last refit); its flow is also
        ``state.precond_params.flow``.
    ksd : (num_checks,)
        The KSD in the run's fixed frame (:func:`numpyro_dsd.svgd.monitor_ksd`: one kernel, one
        coordinate system, comparable across the whole run) at the start of the call and after
        every chunk: the series to judge convergence by.
    ksd_step : (num_checks,)
        The step count at which each ``ksd`` was measured.
    finish_ksd : scalar or None
        The fixed-frame KSD of ``particles`` after the finish (:func:`numpyro_dsd.svgd.finish`),
        None when the run had none (``ksd[-1]`` is the chain's last value before it).
    finish_joint : (d,) bool or None
        The latent coordinates whose cross moments the finish fitted
        (:func:`numpyro_dsd.svgd.gaussian_tails` for ``finish_moments="auto"``): all False is
        the diagonal finish. None when the run had no finish.
    """

    particles: jax.Array
    state: core.SVGDState
    stein_force: jax.Array
    ksd_squared: jax.Array
    flow_fit: FlowFit | None = None
    ksd: jax.Array | None = None
    ksd_step: jax.Array | None = None
    finish_ksd: jax.Array | None = None
    finish_joint: jax.Array | None = None


class SVGDDivergenceWarning(UserWarning):
    """The fixed-frame KSD of an SVGD run rose for a sustained stretch
    (:func:`numpyro_dsd.svgd.ksd_rising`): the particles are moving away from the target."""


class NonFiniteStepError(ValueError):
    """A step met a non-finite score, force, position or optimizer state; ``.result`` holds
    the run up to the last state whose particles, scores and optimizer state are all finite,
    the one a smaller step can continue from: ``run(..., init_state=err.result.state)`` on an
    object with a smaller step size resumes from it (docs/svgd.md, "When a run stops")."""

    def __init__(self, message: str, result: SVGDRunResult):
        super().__init__(message)
        self.result = result


class SVGDInterrupted(KeyboardInterrupt):
    """A ``KeyboardInterrupt`` (Ctrl-C) during :meth:`SVGD.run`; ``.result`` holds the run up
    to its last completed chunk (its particles without the finish), so
    ``run(..., init_state=err.result.state)`` resumes it (docs/svgd.md, "When a run stops")."""

    def __init__(self, message: str, result: SVGDRunResult):
        super().__init__(message)
        self.result = result


@dataclass
class _Progress:
    """A run's record so far: the last state it completed and the traces up to it (what
    :class:`NonFiniteStepError` and :class:`SVGDInterrupted` carry). Traces may run past
    ``state`` (a chunk cut short, a step undone): :meth:`SVGD._result` cuts them at its step."""

    state: core.SVGDState
    fit: FlowFit | None
    start: int
    forces: list[jax.Array] = field(default_factory=list)
    ksds: list[jax.Array] = field(default_factory=list)
    checks: dict[int, float] = field(default_factory=dict)

    def add(self, state: core.SVGDState, fit: FlowFit | None, info: core.SVGDInfo) -> None:
        """Record a chunk's taken steps (``info.finite``) and the state it ended at."""
        ok = np.asarray(info.finite)
        self.forces.append(info.stein_force[ok])
        self.ksds.append(info.ksd_squared[ok])
        self.state, self.fit = state, fit


class SVGD:
    """Stein variational gradient descent for a NumPyro model: noisy SVGD in a flow's latent
    space, then a short deterministic finish, by default.

    Each step moves every particle along the SVGD force (:func:`numpyro_dsd.svgd.stein_force`)
    of the model's unconstrained log density, :math:`\\log p(x) = -U(x)`; with a
    ``preconditioner`` the particles move in its latent space :math:`z = T(x)` under
    :math:`T_\\#p` (docs/math.md §6.3) and are pulled back. By default (docs/svgd.md, "The
    default: noisy, then a finish") the ``num_steps`` steps of :meth:`run` are noisy SVGD steps
    (``noise_step``: a Langevin diffusion of all particles whose invariant law is independent
    draws of the target, so they cannot collapse) in the latent space of a NeuTra flow fitted on
    the model, and the particles returned have then taken ``finish_steps`` deterministic steps of
    ``optim`` towards the Stein moment equations (:func:`numpyro_dsd.svgd.finish`), which
    removes most of the independent draws' Monte Carlo error of the means and sds.
    ``noise_step=None`` is deterministic SVGD of ``optim`` throughout (with
    ``preconditioner=None``: plain SVGD as in NumPyro and BlackJAX).

    Parameters
    ----------
    model : callable
        NumPyro model with continuous latent sites.
    optim : optax GradientTransformation, numpyro.optim optimizer, or None
        The deterministic steps' optimizer: the finish's, or every step's with
        ``noise_step=None``. Adagrad-type (``optax.adagrad(0.1)``,
        ``numpyro.optim.Adagrad(0.1)``) is the usual choice. None: noisy steps only, no finish.
    kernel : IMQ or Gaussian, optional
        Default ``Gaussian(bandwidth="svgd")``: :math:`\\exp(-\\|z-y\\|^2\\log n/\\ell^2)` with the
        median distance :math:`\\ell`, re-estimated every ``bandwidth_every`` steps.
    num_particles : int
    preconditioner : "flow" (default), "constant", None, a Preconditioner, or a flow
        ``"flow"``: a NeuTra flow fitted by :func:`~numpyro_dsd.fit_flow` in :meth:`init`
        (:func:`~numpyro_dsd.svgd.infer.default_flow_fit`; seconds to tens of seconds): its arrays
        live in the state
        (``state.precond_params``), its record in ``SVGDRunResult.flow_fit``. ``"constant"``:
        :class:`~numpyro_dsd.svgd.preconditioners.ConstantPreconditioner` (average Hessian,
        re-estimated every 100 steps; enough on a nearly Gaussian posterior such as a logistic
        regression, not on a hierarchy). None: the model's unconstrained space, where
        ``noise_step`` is in its raw units. A flow object (``FlowFit`` or ``FittedFlow`` from
        ``fit_flow``, NumPyro ``Transform`` data-to-latent, ``(guide, params)``) is wrapped in
        :class:`~numpyro_dsd.svgd.preconditioners.FlowPreconditioner` (no fit).
    bandwidth_every : int
        Steps between bandwidth updates (a median of at most 256 particles' distances).
    noise_step : float or None
        Default 0.05. The noisy steps' size :math:`h`: each step adds :math:`h n\\Phi` and a
        Gaussian draw with covariance :math:`2hK` across particles (K the kernel matrix), the
        discretised Langevin diffusion of all particles jointly (docs/math.md §6.6,
        :func:`numpyro_dsd.svgd.build_step`); :math:`h` is a step in the units of the space SVGD
        runs in, which a preconditioner standardises. None: deterministic SVGD steps of
        ``optim`` throughout, no finish.
    finish_steps : int
        Default 100. Deterministic SVGD steps of ``optim`` towards the Stein moment equations,
        applied to the particles :meth:`run` returns after the noisy steps
        (:func:`numpyro_dsd.svgd.finish`); the chain's state (``result.state``) is not changed
        by them, so a resumed run continues the chain. 0: no finish.
    finish_moments : {"auto", "full", "diagonal"}
        The finish's linear kernel (:func:`numpyro_dsd.svgd.finish`). ``"full"``: its fixed
        points match the whole latent covariance (what corrects the real models of
        docs/svgd.md; it drifts outwards on heavy tails: variance 1.1-1.5 on Student-t(5)
        marginals). ``"diagonal"``: a location and a scale per latent coordinate, stable on
        heavy tails, blind to the correlations a flow left. ``"auto"`` (default): the full
        finish on the coordinates whose tails look Gaussian, the diagonal one on the rest
        (:func:`numpyro_dsd.svgd.gaussian_tails`; ``result.finish_joint`` says which).
    linear_weight : float
        With ``noise_step=None`` only: adds :math:`w((z - \\bar z)^\\top(y - \\bar z) + 1)` to
        the kernel (default 0, plain SVGD), whose fixed points match a Gaussian's Stein moment
        equations (Liu & Wang 2018; :func:`numpyro_dsd.svgd.stein_force`). It counters the
        variance collapse of deterministic SVGD on near-Gaussian (latent) targets and diverges on
        heavy tails (docs/svgd.md).
    init_radius : float
        Initial particles are uniform in :math:`[-r, r]^d` in the space SVGD runs in (NumPyro's
        ``init_to_uniform`` radius), unless ``init_params`` are given.
    chunk_size : int
        Steps per jitted ``lax.scan`` between progress-bar updates.
    flow_kwargs : dict, optional
        Passed to :func:`~numpyro_dsd.fit_flow` for ``preconditioner="flow"``, over
        :func:`~numpyro_dsd.svgd.infer.default_flow_fit`.
    devices : sequence of jax devices, optional
        Particles are split over these (default all local devices) when they divide
        ``num_particles`` (:func:`numpyro_dsd.svgd.shard_state`); the jitted step then runs on
        all of them.
    **static_kwargs
        Keyword arguments of the model fixed for every call.

    Notes
    -----
    The object is configuration and the state is complete (NumPyro's ``SVI`` rule):
    ``init``/``update``/``run`` never change the object's settings; the preconditioner's
    parameters (a fitted or refitted flow's arrays and architecture) and the ``rng_key`` live in
    the :class:`~numpyro_dsd.svgd.SVGDState`. Every random choice derives from the key given to
    :meth:`run`/:meth:`init`: ``flow_key, init_key, state_key = split(rng_key, 3)`` (the NeuTra
    fit, the initial particles, and the state's key, from which a re-estimate at step ``t``
    takes ``fold_in(state_key, t)``). So two ``run`` calls with the same key give the same
    particles. The object records only the model's arguments of the last call, for
    :meth:`get_samples`.

    Examples
    --------
    >>> import jax, numpyro, numpyro.distributions as dist, optax
    >>> from numpyro.infer import Predictive
    >>> from numpyro_dsd import SVGD
    >>> def model(y=None):
    ...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    ...     sigma = numpyro.sample("sigma", dist.HalfNormal(5.0))
    ...     numpyro.sample("y", dist.Normal(mu, sigma), obs=y)
    >>> y = jax.numpy.array([1.0, 2.0, 3.0, 2.5])
    >>> svgd = SVGD(model, optax.adagrad(0.1), num_particles=50)  # fits a flow, then runs
    >>> result = svgd.run(jax.random.key(0), 500, y, progress_bar=False)
    >>> samples = svgd.get_samples(result)  # NUTS: mu 2.11 +- 0.94
    >>> samples["mu"].shape, bool(abs(samples["mu"].mean() - 2.1) < 0.2)
    ((50,), True)
    >>> plain = SVGD(model, optax.adagrad(1.0), num_particles=50, preconditioner=None,
    ...              noise_step=None)  # plain SVGD, as NumPyro's
    >>> Predictive(model, posterior_samples=samples)(jax.random.key(1))["y"].shape
    (50,)
    """

    def __init__(
        self,
        model: Model,
        optim: Any,
        kernel: IMQ | Gaussian | None = None,
        num_particles: int = 100,
        preconditioner: Any = "flow",
        *,
        bandwidth_every: int = 1,
        noise_step: float | None = 0.05,
        finish_steps: int = 100,
        finish_moments: str = "auto",
        linear_weight: float = 0.0,
        init_radius: float = 2.0,
        chunk_size: int = 50,
        flow_kwargs: Mapping[str, Any] | None = None,
        devices: Sequence[jax.Device] | None = None,
        **static_kwargs: Any,
    ):
        for name, value in (
            ("num_particles", num_particles),
            ("bandwidth_every", bandwidth_every),
            ("chunk_size", chunk_size),
        ):
            if not (isinstance(value, (int, np.integer)) and value >= 1):
                raise ValueError(f"{name} must be an integer >= 1; got {value!r}.")
        if not (isinstance(finish_steps, (int, np.integer)) and finish_steps >= 0):
            raise ValueError(f"finish_steps must be an integer >= 0; got {finish_steps!r}.")
        self.model = model
        if optim is None and noise_step is None:
            raise ValueError(
                "Give optim (deterministic SVGD steps, e.g. optax.adagrad(0.1)), noise_step "
                "(noisy SVGD's step size, e.g. 0.05), or both (the default: noisy steps, then "
                "a finish of finish_steps deterministic steps); got neither."
            )
        core.check_noise_step(noise_step, linear_weight)
        self.noise_step = None if noise_step is None else float(noise_step)
        self.finish_steps = 0 if optim is None or noise_step is None else int(finish_steps)
        if finish_moments not in FINISH_KERNELS:
            raise ValueError(
                f"finish_moments must be one of {FINISH_KERNELS}; got {finish_moments!r}."
            )
        self.moments = finish_moments
        self.optim = optax.identity() if optim is None else core.as_optax(optim)
        self.kernel = core.default_kernel() if kernel is None else kernel
        self.num_particles = int(num_particles)
        self.preconditioner = _resolve(preconditioner)
        self.bandwidth_every = int(bandwidth_every)
        if not linear_weight >= 0:
            raise ValueError(f"linear_weight must be >= 0; got {linear_weight!r}.")
        self.linear_weight = float(linear_weight)
        self.init_radius = float(init_radius)
        self.chunk_size = int(chunk_size)
        self.flow_kwargs = dict(flow_kwargs or {})
        self.devices = devices
        self.static_kwargs = static_kwargs
        self._layout: ModelLayout | None = None  # the model's layout at the last init/run
        # The step closes over the configuration only; a refit that changes the flow's
        # architecture changes the state's pytree structure (FlowParams), so jit retraces.
        # Model arguments as in NumPyro's MCMC: arrays are traced, other values (a plate's
        # size) stay concrete and are static (model.layout.split_model_args).
        self._update = jax.jit(self._update_fn, static_argnums=2)
        self._scan = jax.jit(self._scan_fn, static_argnums=(3, 4))
        self._monitor = jax.jit(self._monitor_fn, static_argnums=2)
        self._scores = jax.jit(self._scores_fn, static_argnums=2)
        self._finish = jax.jit(self._finish_fn, static_argnums=2)

    # ---- set-up -------------------------------------------------------------------------
    def _layout_for(self, args: tuple, kwargs: dict[str, Any]) -> ModelLayout:
        """The model's flat unconstrained layout for these arguments (an abstract trace)."""
        return ModelLayout(self.model, args, {**self.static_kwargs, **kwargs})

    def _setup(self, args: tuple, kwargs: dict[str, Any]) -> None:
        self._layout = self._layout_for(args, kwargs)

    @property
    def dim(self) -> int:
        """:math:`d`, the model's flat unconstrained dimension (known after ``init``/``run``)."""
        return self._ready().dim

    def _ready(self) -> ModelLayout:
        if self._layout is None:
            raise ValueError("call init() or run() first: the model's sites are not known yet.")
        return self._layout

    def _preconditioner(self, layout: ModelLayout | None = None) -> Preconditioner | None:
        """The preconditioner in the model's flat coordinates (default: the last
        ``init``/``run``'s layout); see ``Preconditioner.in_layout``."""
        pre = self.preconditioner
        return None if pre is None else pre.in_layout(self._ready() if layout is None else layout)

    def init(
        self, rng_key: jax.Array, *args: Any, init_params: Any = None, **kwargs: Any
    ) -> core.SVGDState:
        """Initial :class:`~numpyro_dsd.svgd.SVGDState` (fits the flow for ``"flow"``: its
        arrays are in ``state.precond_params``; :meth:`init_with_fit` also returns the fit).

        ``init_params``: constrained values ``{site: (num_particles, ...)}`` or flat
        unconstrained particles ``(num_particles, d)``.
        """
        return self.init_with_fit(rng_key, *args, init_params=init_params, **kwargs)[0]

    def init_with_fit(
        self, rng_key: jax.Array, *args: Any, init_params: Any = None, **kwargs: Any
    ) -> tuple[core.SVGDState, FlowFit | None]:
        """:meth:`init` and the :class:`~numpyro_dsd.flows.FlowFit` it made (``"flow"`` with no
        flow given), else None.

        Examples
        --------
        >>> import jax, numpyro, numpyro.distributions as dist, optax
        >>> def model():
        ...     numpyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        >>> svgd = SVGD(model, optax.adagrad(0.1), num_particles=4, preconditioner="flow",
        ...             flow_kwargs={"num_steps": 10})
        >>> state, fit = svgd.init_with_fit(jax.random.key(0))
        >>> fit.losses.shape, state.precond_params.flow.spec == fit.flow.spec
        ((10,), True)
        """
        self._setup(args, kwargs)
        flow_key, init_key, state_key = jax.random.split(rng_key, 3)
        params, fit = self._fitted_flow(flow_key, args, kwargs)
        log_prob = self._layout.log_prob
        x0 = self._initial(init_key, init_params, log_prob, params)
        state = core.init(
            x0,
            log_prob,
            self.optim,
            self.kernel,
            self._preconditioner(),
            rng_key=state_key,
            precond_params=params,
        )
        return core.shard_state(state, self.devices), fit

    def _fitted_flow(
        self, key: jax.Array, args: tuple, kwargs: dict[str, Any]
    ) -> tuple[FlowParams | None, FlowFit | None]:
        """A flow preconditioner with no flow: fit one on the model (NeuTra) with ``key``;
        its parameters go to the state, never to the object."""
        pre = unwrap(self._preconditioner())
        if not isinstance(pre, FlowPreconditioner):
            return None, None
        params, fit = None, None
        if pre.flow is None:
            given = {**pre.fit_kwargs, **self.flow_kwargs}
            fit_kwargs = {"progress_bar": False, **default_flow_fit(), **given}
            model_kwargs = {**self.static_kwargs, **kwargs}
            try:
                fit = fit_flow(self.model, *args, rng_key=key, **fit_kwargs, **model_kwargs)
            except FlowFitError:
                if "optim" in given:
                    raise
                # default_flow_fit's fixed schedule diverged: fit_flow's own default optimiser,
                # which shrinks with d and backs off (a horseshoe regression, d = 22)
                fit_kwargs.pop("optim")
                fit = fit_flow(self.model, *args, rng_key=key, **fit_kwargs, **model_kwargs)
            params = FlowParams.of(fit.flow)
        dtype = jnp.zeros(()).dtype
        bijection = pre.bijection(() if params is None else params)
        check_flow_dim(bijection, self.dim, dtype)
        return params, fit

    def _initial(
        self, key: jax.Array, init_params: Any, log_prob: core.LogProb, params: Any
    ) -> jax.Array:
        """Data-space initial particles: ``init_params``, or uniform in the latent space mapped
        back through the preconditioner (``params``, or ``preconditioner.start`` at the box)."""
        if init_params is not None:
            return self._flat_init(init_params)
        r = self.init_radius
        u = jax.random.uniform(key, (self.num_particles, self.dim), minval=-r, maxval=r)
        pre = self._preconditioner()
        if pre is None:
            return u
        if params is None:
            params = pre.start(u, log_prob)  # a constant Q: at u, then init_rounds Newton steps
        return core.from_latent(pre, params, u)

    def _flat_init(self, init_params: Any) -> jax.Array:
        n, d, layout = self.num_particles, self.dim, self._ready()
        if isinstance(init_params, Mapping):
            if set(init_params) != set(layout.site_names):
                raise ValueError(
                    f"init_params must have exactly the latent sites {list(layout.site_names)}; "
                    f"got {sorted(init_params)}."
                )
            for name, site_shape in layout.site_shapes.items():
                shape = tuple(np.shape(init_params[name]))
                if shape != (n, *site_shape):
                    raise ValueError(
                        f"init_params[{name!r}] has shape {shape}; expected "
                        f"{(n, *site_shape)} (num_particles first, then the site's shape)."
                    )
            x = jax.vmap(layout.flatten)({k: jnp.asarray(v) for k, v in init_params.items()})
        else:
            x = jnp.asarray(init_params, jnp.result_type(float))  # the layout's dtype
            if x.shape != (n, d):
                raise ValueError(
                    f"init_params has shape {x.shape}; expected (num_particles, d) = {(n, d)} "
                    "flat unconstrained particles, or a dict of constrained site values."
                )
        if not bool(jnp.all(jnp.isfinite(x))):
            raise ValueError("init_params are not finite (in unconstrained space): check supports.")
        return x

    # ---- stepping -------------------------------------------------------------------------
    def _checked_layout(
        self, state: core.SVGDState, arrays: tuple, static: ModelArgs, name: str = "init_state"
    ) -> ModelLayout:
        """The model's layout for these arguments, with ``state`` checked against it and the
        object (:func:`_check_state`). Called while tracing, so the check costs nothing per
        call: a state of another shape or dtype is a new trace."""
        layout = self._layout_for(*static.merge(arrays))
        _check_state(state, self.num_particles, layout, name)
        return layout

    def _step_fn(self, layout: ModelLayout) -> Callable:
        return core.build_step(
            layout.log_prob,
            self.optim,
            self.kernel,
            self._preconditioner(layout),
            self.bandwidth_every,
            self.linear_weight,
            self.noise_step,
        )

    def _update_fn(self, state: core.SVGDState, arrays: tuple, static: ModelArgs) -> tuple:
        return self._step_fn(self._checked_layout(state, arrays, static, "state"))(state)

    def _scan_fn(
        self,
        state: core.SVGDState,
        before: core.SVGDState,
        arrays: tuple,
        static: ModelArgs,
        length: int,
    ) -> tuple:
        """``length`` steps: ``(state, before, infos)``, ``before`` the state the last taken
        step started from (unchanged if none was taken): where a run goes back to when the
        scores at ``state`` are not finite (:meth:`_non_finite`)."""
        step = self._step_fn(self._checked_layout(state, arrays, static))

        def body(carry: tuple, _: Any) -> tuple:
            current, previous = carry
            new, info = step(current)
            previous = jax.lax.cond(info.finite, lambda: current, lambda: previous)
            return (new, previous), info

        (state, before), infos = jax.lax.scan(body, (state, before), length=length)
        return state, before, infos

    def _monitor_fn(self, state: core.SVGDState, arrays: tuple, static: ModelArgs) -> jax.Array:
        layout = self._checked_layout(state, arrays, static)
        return core.monitor_ksd(state, layout.log_prob, self._preconditioner(layout))

    def _scores_fn(self, state: core.SVGDState, arrays: tuple, static: ModelArgs) -> jax.Array:
        """The scores at the state's particles, in the space SVGD runs in."""
        layout = self._checked_layout(state, arrays, static)
        pre = self._preconditioner(layout)
        return core.latent_scores(state.particles, layout.log_prob, pre, state.precond_params)[1]

    def _finish_fn(self, state: core.SVGDState, arrays: tuple, static: ModelArgs) -> tuple:
        layout = self._checked_layout(state, arrays, static)
        pre = self._preconditioner(layout)
        done, info, joint = finish(
            state, layout.log_prob, self.optim, pre, self.finish_steps, self.moments
        )
        return done, info.finite, core.monitor_ksd(done, layout.log_prob, pre), joint

    def _resume(
        self, state: Any, args: tuple, kwargs: dict[str, Any], name: str, setup: bool
    ) -> core.SVGDState:
        """A given state, ready for this object: its type and flow checked, the model's layout
        set up (``setup``: always, for :meth:`get_samples`; else only if there is none) and
        the optimizer state re-initialised if it belongs to another optimizer. Its shape and
        dtype are checked where it is traced (:meth:`_checked_layout`)."""
        if not isinstance(state, core.SVGDState):
            raise TypeError(
                f"{name} must be an SVGDState (result.state, or err.result.state of a stopped "
                f"run); got {type(state).__name__}."
            )
        if setup or self._layout is None:
            self._setup(args, kwargs)
        pre = unwrap(self.preconditioner)
        unfitted = isinstance(pre, FlowPreconditioner) and pre.flow is None
        if unfitted and not isinstance(state.precond_params, FlowParams):
            raise ValueError(
                "The flow preconditioner is not fitted and this state carries no flow: start from "
                "a state made by init() or run(), or give the flow (preconditioner=fit.flow)."
            )
        if jax.tree.structure(state.opt_state) == self._optimizer_structure:
            return state
        if self.noise_step is None:  # noisy steps do not use it (the finish starts afresh)
            warnings.warn(
                f"{name}'s optimizer state is not one of this object's optim (another "
                "optimizer made it): it is re-initialised from the particles, so statistics "
                "such as adagrad's sums of squares start afresh. To keep them, resume with the "
                "optimizer the state was made with (its step size may differ).",
                UserWarning,
                stacklevel=3,
            )
        return state._replace(opt_state=self.optim.init(state.particles))

    @cached_property
    def _optimizer_structure(self) -> Any:
        """The pytree structure of ``optim``'s state (that of one particle array)."""
        x = jax.ShapeDtypeStruct((1, 1), jnp.result_type(float))
        return jax.tree.structure(jax.eval_shape(self.optim.init, x))

    def update(
        self, state: core.SVGDState, *args: Any, **kwargs: Any
    ) -> tuple[core.SVGDState, core.SVGDInfo]:
        """One jitted step: ``(state, info)``; a non-finite step leaves ``state`` unchanged
        (``info.finite`` False). Re-estimates that run between chunks (a flow refit) are
        :meth:`run`'s job; here only those inside the step happen. ``state`` is checked as
        :meth:`run`'s ``init_state`` is."""
        state = self._resume(state, args, kwargs, "state", setup=False)
        return self._update(state, *split_model_args(args, kwargs))

    def run(
        self,
        rng_key: jax.Array,
        num_steps: int,
        *args: Any,
        progress_bar: bool = True,
        init_state: core.SVGDState | None = None,
        init_params: Any = None,
        **kwargs: Any,
    ) -> SVGDRunResult:
        """Run ``num_steps`` steps (jitted ``lax.scan`` chunks) and return an
        :class:`SVGDRunResult`.

        ``init_state=result.state`` resumes exactly: 300 steps then 200 more equal 500 steps
        (``rng_key`` is then unused: the state carries its own). The state must match the
        object (``num_particles``, the model's dimension with these arguments, JAX's float
        dtype): a ``ValueError`` names a mismatch. A state made with another optimizer gets a
        fresh optimizer state, with a ``UserWarning``. Re-estimates that run between
        chunks (a flow refit, :func:`numpyro_dsd.svgd.core.reestimate_due`) happen when the
        step count reaches a multiple of the preconditioner's ``every``.

        A non-finite step stops the run with :class:`NonFiniteStepError`, whose ``.result``
        keeps the last state whose particles, scores and optimizer state are finite (the state
        before the one a step reached when the scores there are not) and the traces up to it:
        resume from it with a smaller step. A ``KeyboardInterrupt`` (Ctrl-C) raises
        :class:`SVGDInterrupted`, a ``KeyboardInterrupt`` whose ``.result`` holds the run up to
        its last completed chunk. The KSD in the run's fixed frame
        (:func:`numpyro_dsd.svgd.monitor_ksd`) is measured at the start and after every chunk
        (``result.ksd``, ``result.ksd_step``, shown on the progress bar); a sustained rise
        issues :class:`SVGDDivergenceWarning` (:func:`numpyro_dsd.svgd.ksd_rising`). With
        both ``noise_step`` and ``optim`` (the default), ``result.particles`` have then taken
        ``finish_steps`` deterministic steps (:func:`numpyro_dsd.svgd.finish`; their KSD is
        ``result.finish_ksd``); ``result.state`` is the chain before them, so resuming continues
        the chain and finishes again.
        """
        if not (isinstance(num_steps, (int, np.integer)) and num_steps >= 1):
            raise ValueError(f"num_steps must be an integer >= 1; got {num_steps!r}.")
        if init_state is None:
            state, fit = self.init_with_fit(rng_key, *args, init_params=init_params, **kwargs)
        else:
            state = self._resume(init_state, args, kwargs, "init_state", setup=True)
            fit = None
        model_args = split_model_args(args, kwargs)
        progress = _Progress(state, fit, int(state.step))
        bar = tqdm(total=int(num_steps), disable=not progress_bar, desc="SVGD")
        try:
            progress.checks[progress.start] = float(self._monitor(state, *model_args))
            self._chunks(progress, num_steps, args, kwargs, bar)
            return self._finished(self._result(progress), model_args)
        except KeyboardInterrupt as err:
            raise self._interrupted(progress) from err
        finally:
            bar.close()

    def _chunks(
        self, progress: _Progress, num_steps: int, args: tuple, kwargs: dict, bar: Any
    ) -> None:
        """:meth:`run`'s loop: ``num_steps`` steps in jitted chunks, each completed chunk (its
        state, traces and fixed-frame KSD) recorded in ``progress``."""
        model_args = split_model_args(args, kwargs)
        state, fit = progress.state, progress.fit
        before, done, warned = state, 0, False  # before: where a non-finite state goes back to
        while done < num_steps:
            if core.reestimate_due(self.preconditioner, int(state.step)):
                state, fit = self._reestimate(state, args, kwargs)
                before = state  # never back across a refit: its flow would be redone
            due = core.steps_to_reestimate(self.preconditioner, int(state.step))
            length = min(self.chunk_size, num_steps - done, due or self.chunk_size)
            state, before, info = self._scan(state, before, *model_args, length)
            if not np.asarray(info.finite).all():
                raise self._non_finite(progress, state, before, info, fit, done, model_args)
            done += length
            progress.add(state, fit, info)
            progress.checks[int(state.step)] = float(self._monitor(state, *model_args))
            warned = warned or _warn_if_rising(progress.checks)
            bar.update(length)
            bar.set_postfix_str(f"ksd={progress.checks[int(state.step)]:.3g}")

    def _finished(self, result: SVGDRunResult, model_args: tuple) -> SVGDRunResult:
        """The run's result with the finish applied to its particles (the chain's state kept);
        a finish that meets a non-finite step keeps its last finite particles and warns."""
        if not self.finish_steps:
            return result
        done, finite, finish_ksd, joint = self._finish(result.state, *model_args)
        finite = np.asarray(finite)
        if not finite.all():
            warnings.warn(
                f"SVGD's finish met a non-finite step at step {int(np.argmin(finite))} of "
                f"{self.finish_steps}: the particles returned are its last finite ones. Lower "
                "the optimizer's step size, or set finish_steps=0 (result.state holds the "
                "chain).",
                SVGDDivergenceWarning,
                stacklevel=3,
            )
        return result._replace(
            particles=self.get_particles(done), finish_ksd=finish_ksd, finish_joint=joint
        )

    def _reestimate(
        self, state: core.SVGDState, args: tuple, kwargs: dict
    ) -> tuple[core.SVGDState, Any]:
        """A between-chunks re-estimate (a flow refit) at the state's step: new state and the
        record (:class:`~numpyro_dsd.flows.FlowFit`); the key is ``fold_in(state.rng_key,
        step)``."""
        layout = self._layout_for(args, kwargs)
        new, record = core.reestimate(
            state, layout.log_prob, self.optim, self.kernel, self._preconditioner(layout)
        )
        return core.shard_state(new, self.devices), record

    def _result(self, progress: _Progress) -> SVGDRunResult:
        """The run up to ``progress.state``: traces and checks past its step are cut off."""
        state = progress.state
        step = int(state.step)
        taken = step - progress.start
        checks = {s: v for s, v in progress.checks.items() if s <= step}

        def trace(parts: list[jax.Array]) -> jax.Array:
            return jnp.concatenate(parts)[:taken] if parts else jnp.zeros(0, state.particles.dtype)

        return SVGDRunResult(
            self.get_particles(state),
            state,
            trace(progress.forces),
            trace(progress.ksds),
            progress.fit,
            jnp.asarray(list(checks.values()), state.particles.dtype),
            jnp.asarray(list(checks), dtype=jnp.int32),
        )

    def _non_finite(
        self,
        progress: _Progress,
        state: core.SVGDState,
        before: core.SVGDState,
        info: core.SVGDInfo,
        fit: FlowFit | None,
        done: int,
        model_args: tuple,
    ) -> NonFiniteStepError:
        """The error for a chunk that met a non-finite step at ``state``. If the scores at
        ``state``'s particles are not finite (the particles are: the step that reached them
        checked only its own scores), no step size continues from there, so the run goes back
        to ``before``, the state that step started from."""
        k = int(np.argmin(np.asarray(info.finite)))
        step = int(state.step)
        scores_ok = bool(np.all(np.isfinite(self._scores(state, *model_args))))
        if scores_ok:
            why = "the new particles or the optimizer state were not finite (too large a step)"
        else:
            why = (
                "the scores or the Stein force at its particles were not finite (a particle left "
                "the region where the model's log density is finite)"
            )
            state = before  # the state itself when this call took no step
        progress.add(state, fit, info)
        kept = int(state.step)
        if scores_ok or kept < step:
            then = (
                f"err.result.state (step {kept}) is the last state whose particles, scores and "
                "optimizer state are finite: resume from it with a smaller step size "
                "(run(..., init_state=err.result.state) on an SVGD object with a smaller optim "
                "step or noise_step), or check the model at err.result.particles"
            )
        else:
            then = (
                f"err.result.state (step {kept}) is where this call started, and no step "
                "continues from it: resume from an earlier state, or start afresh"
            )
        return NonFiniteStepError(
            f"SVGD stopped at step {step} of this run's count (step {done + k} of this call): "
            f"{why}. {then} (docs/svgd.md, 'When a run stops').",
            self._result(progress),
        )

    def _interrupted(self, progress: _Progress) -> SVGDInterrupted:
        """The error for a ``KeyboardInterrupt`` during :meth:`run`: the run up to ``progress``."""
        result = self._result(progress)
        step = int(result.state.step)
        return SVGDInterrupted(
            f"SVGD was interrupted. err.result holds the run up to step {step}, its last "
            f"completed chunk ({step - progress.start} steps of this call; the particles "
            "without the finish): resume with run(..., init_state=err.result.state).",
            result,
        )

    # ---- outputs --------------------------------------------------------------------------
    def get_particles(self, state: core.SVGDState) -> jax.Array:
        """Flat unconstrained particles ``(num_particles, d)`` in the data space."""
        return core.from_latent(self._preconditioner(), state.precond_params, state.particles)

    def get_samples(self, result: SVGDRunResult | core.SVGDState) -> dict[str, jax.Array]:
        """Constrained particles ``{site: (num_particles, ...)}`` (latent and deterministic
        sites), the form :class:`numpyro.infer.Predictive` takes as ``posterior_samples``."""
        layout = self._ready()
        x = result.particles if isinstance(result, SVGDRunResult) else self.get_particles(result)
        return jax.vmap(layout.constrain)(x)

    def to_arviz(self, result: SVGDRunResult) -> Any:
        """InferenceData (ArviZ 0.x) or DataTree (1.x): the particles as the posterior's one
        chain (particles on ``draw``) and the per-step ``ksd_squared`` and ``stein_force``, with
        the fixed-frame ``ksd`` over ``ksd_step``, in the group ``svgd_trace``
        (:func:`numpyro_dsd.arviz.convert.from_svgd`;
        :func:`numpyro_dsd.plot_svgd_trace` draws it)."""
        trace = {"ksd_squared": result.ksd_squared, "stein_force": result.stein_force}
        attrs = {
            "kernel": self.kernel,
            "preconditioner": self.preconditioner,
            "num_particles": self.num_particles,
            "num_steps": int(result.state.step),
            "noise_step": self.noise_step,
            "finish_steps": self.finish_steps,
            "finish_moments": self.moments if self.finish_steps else None,
            "finish_joint_coordinates": (
                None if result.finish_joint is None else int(np.sum(result.finish_joint))
            ),
        }
        checks = None if result.ksd is None else (result.ksd_step, result.ksd)
        return from_svgd(self.get_samples(result), trace, attrs, checks)


def _check_state(state: core.SVGDState, num_particles: int, layout: ModelLayout, name: str) -> None:
    """Raise ``ValueError`` unless the particles of ``state`` (the argument ``name``) are
    ``(num_particles, layout.dim)`` in JAX's default float dtype."""
    shape, dtype = tuple(state.particles.shape), state.particles.dtype
    if len(shape) != 2:
        raise ValueError(f"{name}.particles must be (num_particles, d); got shape {shape}.")
    n, d = shape
    if n != num_particles:
        raise ValueError(
            f"{name} has {n} particles but this SVGD object has num_particles={num_particles}: "
            f"resume it with an object made with num_particles={n}, or start afresh (no "
            "init_state)."
        )
    if d != layout.dim:
        raise ValueError(
            f"{name}'s particles have {d} coordinates but the model called with these model "
            f"arguments has d = {layout.dim} ({layout}): resume with the model and model "
            "arguments the state was made with."
        )
    expected = jnp.result_type(float)
    if dtype != expected:
        x64 = "on" if expected == jnp.float64 else "off"
        raise ValueError(
            f"{name}'s particles are {dtype} but JAX's default float is {expected} "
            f"(jax_enable_x64 is {x64}): resume with the jax_enable_x64 setting the state was "
            "made with."
        )


def _warn_if_rising(checks: dict[int, float]) -> bool:
    """Warn (once per run: the caller stops asking) when the fixed-frame KSD rises for a
    sustained stretch (:func:`numpyro_dsd.svgd.ksd_rising`); True if it warned."""
    steps, values = list(checks), list(checks.values())
    if not core.ksd_rising(values):
        return False
    low = int(np.argmin(values))
    warnings.warn(
        f"SVGD is diverging: its KSD in the run's fixed frame rose at each of the last "
        f"{core.DIVERGENCE_CHECKS} checks, to {values[-1]:.3g} at step {steps[-1]} from "
        f"{values[low]:.3g} at step {steps[low]}. Lower the optimizer's step size, or use "
        "preconditioner='flow' (or 'constant') on a badly scaled posterior; result.ksd and "
        "result.ksd_step hold the series (docs/svgd.md, 'Is the run converging?').",
        SVGDDivergenceWarning,
        stacklevel=4,  # the caller of run(), through run()'s loop
    )
    return True


def _resolve(preconditioner: Any) -> Preconditioner | None:
    if isinstance(preconditioner, FlowFit):  # fit_flow's result: its flow
        preconditioner = preconditioner.flow
    if preconditioner is None or isinstance(preconditioner, Preconditioner):
        return preconditioner
    if hasattr(preconditioner, "estimate") and hasattr(preconditioner, "bijection"):
        return as_preconditioner(preconditioner)
    if isinstance(preconditioner, str):
        options = {"constant": ConstantPreconditioner, "flow": FlowPreconditioner}
        if preconditioner not in options:
            raise ValueError(
                f"Unknown preconditioner {preconditioner!r}: use None, 'constant', 'flow', a "
                "numpyro_dsd.svgd.preconditioners object, or a flow (FittedFlow, NumPyro "
                "Transform)."
            )
        return options[preconditioner]()
    return FlowPreconditioner(preconditioner)
