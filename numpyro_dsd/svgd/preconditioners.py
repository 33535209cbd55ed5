"""SVGD preconditioners: a change of coordinates :math:`z = T(x)` the particles move in.

Plain SVGD in :math:`z` on the pushed-forward target :math:`T_\\#p` is matrix-kernel SVGD in
:math:`x` with :math:`K(x, y) = J(x)^{-1}k(Tx, Ty)J(y)^{-\\top}` (math.md §6.3). Two kinds:

- :class:`ConstantPreconditioner`: :math:`T(x) = L^\\top(x - c)` with :math:`LL^\\top = Q`,
  Wang et al. (2019)'s matrix (average Hessian of :math:`-\\log p`, the score's second moment,
  or the inverse particle covariance), re-estimated every ``every`` steps inside the jitted loop;
- :class:`FlowPreconditioner`: :math:`T` a normalizing flow (a
  :class:`~numpyro_dsd.flows.FittedFlow` from :func:`~numpyro_dsd.fit_flow`, a NumPyro
  ``Transform`` or any bijection), optionally refitted on the particles by the ``SVGD`` class.

A preconditioner has one job: ``estimate(x, log_prob) -> params`` (a pytree of arrays, jittable)
and ``bijection(params)`` (:math:`T` with ``transform_and_log_det``/``inverse_and_log_det``, one
point at a time). ``every`` says how often ``estimate`` is redone (None: never).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from numpyro_dsd.flows.bijections import Bijection, as_bijection, inverse
from numpyro_dsd.flows.fitting import FittedFlow

__all__ = [
    "Preconditioner",
    "Linear",
    "ConstantPreconditioner",
    "FlowPreconditioner",
]

LogProb = Callable[[jax.Array], jax.Array]
_SOURCES = ("hessian", "fisher", "covariance")


@runtime_checkable
class Preconditioner(Protocol):
    """What SVGD needs of a preconditioner."""

    every: int | None

    def estimate(self, x: jax.Array, log_prob: LogProb) -> Any:
        """Parameters (pytree of arrays) from data-space particles ``x`` (n, d)."""
        ...

    def bijection(self, params: Any) -> Bijection:
        """:math:`T` (data to latent) for these parameters."""
        ...


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


class ConstantPreconditioner:
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
        Re-estimate every ``every`` steps (default 100; None: only at the start). The particles
        are re-mapped and the optimizer state reset, since its statistics belong to the old
        coordinates.
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

    def bijection(self, params: Linear) -> Linear:
        return params


class FlowPreconditioner:
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
        The ``SVGD`` class refits the flow on the pulled-back particles every ``refit_every``
        steps (:func:`~numpyro_dsd.fit_flow_to_samples`, a masked autoregressive flow by maximum
        likelihood), re-maps them and resets the optimizer. None (default): the flow stays.
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

    every = None

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
        self.refit_every = refit_every
        self.refit_kwargs = {"num_steps": 500, "batch_size": None, **(refit_kwargs or {})}
        fitted = isinstance(flow, FittedFlow)
        self._spec = flow.spec if fitted else None  # a FittedFlow's arrays travel in the state
        self._bijection = None if flow is None or fitted else _flow_bijection(flow)

    def with_flow(self, flow: object) -> FlowPreconditioner:
        """The same settings with another flow."""
        return FlowPreconditioner(flow, self.fit_kwargs, self.refit_every, self.refit_kwargs)

    def __repr__(self) -> str:
        what = "unfitted" if self.flow is None else type(self.flow).__name__
        return f"FlowPreconditioner({what})"

    def estimate(self, x: jax.Array, log_prob: LogProb) -> tuple:
        """The flow's arrays (params, loc, scale) for a ``FittedFlow``, else ``()``: they live in
        the SVGD state, so a state always maps back through the flow that made it."""
        if self._spec is not None:
            return (self.flow.params, self.flow.loc, self.flow.scale)
        return ()

    def bijection(self, params: Any = ()) -> Bijection:
        if self._spec is not None:
            flow = FittedFlow(self._spec, *params) if params else self.flow
            return as_bijection(flow.transform())
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


def _flow_bijection(flow: object) -> Bijection:
    """:math:`T` (data to latent) from the accepted flow objects."""
    if isinstance(flow, tuple) and len(flow) == 2 and hasattr(flow[0], "get_transform"):
        guide, params = flow
        return inverse(guide.get_transform(params))
    return as_bijection(flow)
