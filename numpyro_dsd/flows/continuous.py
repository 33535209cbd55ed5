"""Continuous-time flows :math:`\\dot z_t = v(z_t, t)` and how DSM changes along them
(docs/math.md §5).

The flow map :math:`T_t` takes :math:`z_{t_0} = x` to :math:`z_t`; with
:math:`J_t = \\partial z_t/\\partial x` and :math:`\\nabla v = \\nabla_z v(z_t, t)`, along each
trajectory

.. math:: \\dot J_t = \\nabla v\\,J_t, \\qquad
    \\tfrac{d}{dt}\\log|\\det J_t| = \\nabla\\cdot v, \\qquad
    \\tfrac{d}{dt} s_{p_t}(z_t) = -\\nabla v^\\top s_{p_t}(z_t) - \\nabla_z(\\nabla\\cdot v),

and the score difference :math:`\\delta_t = s_{q_t}(z_t) - s_{p_t}(z_t)` obeys
:math:`\\dot\\delta_t = -\\nabla v^\\top\\delta_t`, so :math:`\\delta_t = M_t^\\top\\delta_0` with
:math:`M_t = J_t^{-1}`. Then :math:`D(t) = \\mathbb E_q\\|\\delta_t\\|^2
= \\mathrm{DSM}_{M_t}(q, p) = \\mathrm{SM}(q_t, p_t)` and
:math:`\\dot D = -2\\,\\mathbb E_q[\\delta_t^\\top\\nabla v\\,\\delta_t]`.

- :class:`ContinuousFlow` is a :class:`~numpyro_dsd.flows.bijections.Bijection` (the map
  :math:`T_{t_1}`), so ``FlowDiffusion(ContinuousFlow(v))`` is the diffusion
  :math:`M = J_{t_1}^{-1}`; its :meth:`~ContinuousFlow.trajectory` integrates the quantities above
  for one point.
- :func:`dsm_path` gives :math:`D(t)` and :math:`\\dot D(t)` on a time grid for a sample.

Solvers
-------
``solver="rk4"`` (the default) is the classical fixed-step Runge-Kutta method written with
``lax.scan``. Differentiating it in either mode is exact: the derivative of an RK step is the same
RK step applied to the variational equation, so ``jax.jacfwd`` of
:meth:`~ContinuousFlow.transform_and_log_det`
equals the :math:`J_t` ODE integrated alongside (measured: 1e-16 in float64), and ``jax.grad``
agrees with ``jax.jacfwd`` to rounding. Both modes matter: ``FlowDiffusion`` takes
:math:`J` with ``jacfwd`` and the generator route uses ``vjp``. The error is
:math:`O(h^4)`; ``num_steps`` sets it (measured on the tests' field, :math:`d = 3`, float64:
errors fall 16-fold per doubling; at the default 32 steps :math:`z` and the log-det are within
6e-8 of dopri5 and the carried score within 1e-6 of Lemma 3.1). One step costs four evaluations
of the right-hand side. Mapping 1000 points (:math:`d = 3`, float64, 2 shared CPU cores, after
compilation) took 7 ms with RK4 at 32 steps, 48 ms with dopri5 at its default tolerance 1e-10
and 23 ms at ``odeint``'s own 1.4e-8.

``solver="dopri5"`` is ``jax.experimental.ode.odeint`` (adaptive Dormand-Prince 5(4) with
``rtol``/``atol``; present, documented and not deprecated in the installed JAX 0.10.2: no
warning on import or use). It is the choice
for accurate trajectories (docs/math.md §8: :math:`\\dot D` needs accurate :math:`\\delta_t`) and
supports reverse mode (``grad``, ``vjp``, ``jacrev``) through its adjoint ODE, but **not** forward
mode: ``odeint`` is a ``custom_vjp`` function, and ``jax.jacfwd`` through it raises a
``ValueError`` here. So ``FlowDiffusion(ContinuousFlow(v, solver="dopri5"))`` does not work,
while ``FlowDiffusion.from_generator(numpyro_dsd.flows.bijections.inverse(flow))`` (one VJP) does.
diffrax would give adaptive steps in both modes but is a heavy extra dependency.

The flow is exactly invertible, the solver is not: ``inverse_and_log_det`` integrates backwards
with the same solver, so :math:`T^{-1}(T(x)) = x` up to the solver error (measured 3e-9 with 32
RK4 steps and 5e-9 with dopri5 at its default tolerance, float64, on the tests' field).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.ode import odeint
from jax.typing import ArrayLike

from numpyro_dsd._validation import as_points, check_finite, check_pair, check_weights, float_dtype

__all__ = ["ContinuousFlow", "Trajectory", "DSMPath", "dsm_path"]

Velocity = Callable[[jax.Array, jax.Array], jax.Array]
_SOLVERS = ("rk4", "dopri5")
_BLOWUP = (
    "The velocity field blows up or is too stiff for the solver there: shorten [t0, t1], raise "
    "num_steps, or use solver='dopri5'."
)


class _State(NamedTuple):
    """The ODE state of one particle; fields not asked for are ``None``."""

    z: jax.Array
    log_det: jax.Array | None
    J: jax.Array | None
    delta: jax.Array | None
    score: jax.Array | None


OdeRhs = Callable[[_State, jax.Array], _State]


class Trajectory(NamedTuple):
    """One particle's trajectory at the output times (k of them); ``None`` where not asked for.

    Attributes
    ----------
    t : (k,)
        Output times.
    z : (k, d)
        :math:`z_t = T_t(x)`.
    log_det : (k,) or None
        :math:`\\log|\\det J_t|`, integrated as :math:`\\int \\nabla\\cdot v\\,dt`.
    J : (k, d, d) or None
        :math:`J_t = \\partial z_t/\\partial x` (so :math:`M_t = J_t^{-1}`).
    delta : (k, d) or None
        :math:`\\delta_t = M_t^\\top\\delta_0`, the score difference carried along.
    score : (k, d) or None
        :math:`s_{p_t}(z_t)` from the score ODE (needs :math:`\\nabla(\\nabla\\cdot v)`).
    """

    t: jax.Array
    z: jax.Array
    log_det: jax.Array | None
    J: jax.Array | None
    delta: jax.Array | None
    score: jax.Array | None


class DSMPath(NamedTuple):
    """:math:`D(t) = \\mathbb E_q\\|\\delta_t\\|^2` and its time derivative on a grid.

    Attributes
    ----------
    t : (k,)
        Times.
    D : (k,)
        :math:`D(t) = \\mathrm{SM}(q_t, p_t) = \\mathrm{DSM}_{J_t^{-1}}(q, p)`.
    D_dot : (k,)
        :math:`\\dot D(t) = -2\\,\\mathbb E_q[\\delta_t^\\top\\nabla_z v(z_t, t)\\,\\delta_t]`.
    """

    t: jax.Array
    D: jax.Array
    D_dot: jax.Array


class ContinuousFlow:
    """The flow map :math:`T = T_{t_0\\to t_1}` of :math:`\\dot z = v(z, t)`, as a bijection.

    ``transform_and_log_det(x)`` integrates :math:`(z_t, \\log|\\det J_t|)` from
    :math:`(x, 0)` at :math:`t_0` to :math:`t_1`, with
    :math:`\\tfrac{d}{dt}\\log|\\det J_t| = \\nabla\\cdot v = \\operatorname{tr}\\nabla_z v`
    (exact trace from ``jax.jacfwd``, :math:`O(d)` JVPs per evaluation: meant for small
    :math:`d`). ``inverse_and_log_det(z)`` integrates the same ODE from :math:`t_1` back to
    :math:`t_0`.

    Parameters
    ----------
    v : callable (z (d,), t ()) -> (d,)
        The velocity field, differentiable with JAX (twice in ``z`` for the score ODE). Its output
        is cast to the dtype of the points.
    t1, t0 : float
        End and start time (concrete numbers, ``t1 != t0``; ``t1 < t0`` runs backwards).
    solver : {"rk4", "dopri5"}
        Fixed-step RK4 (exact forward- and reverse-mode derivatives) or adaptive Dormand-Prince
        (``jax.experimental.ode.odeint``; reverse mode only). See the module docstring.
    num_steps : int
        RK4 steps between consecutive output times (the flow map is one interval
        :math:`[t_0, t_1]`); the error is :math:`O(\\text{num\\_steps}^{-4})`.
    rtol, atol : float
        Tolerances of ``"dopri5"``. The default 1e-10 (tighter than ``odeint``'s 1.4e-8) keeps
        :math:`T^{-1}(T(x))` within about 1e-8 of :math:`x` in float64, which
        ``FlowDiffusion.from_generator``'s round-trip check needs; float32 runs with it too.

    Examples
    --------
    :math:`v = -z` contracts by :math:`e^{-1}` per unit time, with :math:`\\log|\\det J| = -d\\,t`:

    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> flow = ContinuousFlow(lambda z, t: -z)
    >>> z, logdet = flow.transform_and_log_det(jnp.ones(2))
    >>> np.asarray(z).round(4), logdet
    (array([0.3679, 0.3679], dtype=float32), Array(-2., dtype=float32))
    >>> x, _ = flow.inverse_and_log_det(z)
    >>> np.asarray(x).round(4)
    array([1., 1.], dtype=float32)
    """

    def __init__(
        self,
        v: Velocity,
        t1: float = 1.0,
        t0: float = 0.0,
        *,
        solver: str = "rk4",
        num_steps: int = 32,
        rtol: float = 1e-10,
        atol: float = 1e-10,
    ):
        if not callable(v):
            raise ValueError("ContinuousFlow(v) needs a callable v(z, t) -> dz/dt of shape (d,).")
        self.v = v
        self.t0, self.t1 = _time(t0, "t0"), _time(t1, "t1")
        if self.t1 == self.t0:
            raise ValueError(
                f"ContinuousFlow: t1 equals t0 ({self.t0}); the flow would be the "
                "identity. Give an interval of non-zero length, e.g. t1=1.0, t0=0.0."
            )
        if solver not in _SOLVERS:
            raise ValueError(f"ContinuousFlow: solver must be one of {_SOLVERS}; got {solver!r}.")
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(
                f"ContinuousFlow: num_steps must be a positive int; got {num_steps!r}."
            )
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"ContinuousFlow: rtol and atol must be > 0; got {rtol}, {atol}.")
        self.solver, self.num_steps, self.rtol, self.atol = solver, num_steps, rtol, atol
        self._solve = jax.jit(self._solve_uncompiled, static_argnums=2)

    def transform_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """:math:`(T(x), \\log|\\det J(x)|)` for one point ``x`` (d,)."""
        return self._endpoint(x, self.t0, self.t1, "transform_and_log_det")

    def inverse_and_log_det(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """:math:`(T^{-1}(z), \\log|\\det \\nabla T^{-1}(z)|)` for one point ``z`` (d,)."""
        return self._endpoint(z, self.t1, self.t0, "inverse_and_log_det")

    def _endpoint(
        self, x: jax.Array, start: float, end: float, name: str
    ) -> tuple[jax.Array, jax.Array]:
        x = self._point(x, "x")
        y0 = _State(x, jnp.zeros((), x.dtype), None, None, None)
        ys = self._run(y0, np.array([start, end]))
        z, logdet = ys.z[-1], ys.log_det[-1]
        _check_point(f"ContinuousFlow.{name}", z, logdet)
        return z, logdet

    def trajectory(
        self,
        x: jax.Array,
        ts: ArrayLike | None = None,
        *,
        delta0: ArrayLike | None = None,
        score0: ArrayLike | None = None,
        jacobian: bool = False,
        log_det: bool = True,
    ) -> Trajectory:
        """Integrate one particle's augmented state from :math:`z_{t_0} = x` (docs/math.md §5).

        Parameters
        ----------
        x : (d,)
            Starting point at time ``t0``.
        ts : (k,) array, optional
            Output times, concrete and strictly monotone in the direction from ``t0`` to ``t1``,
            not before ``t0``; default ``(t0, t1)``, which reproduces
            :meth:`transform_and_log_det` exactly. RK4 takes ``num_steps`` steps between
            consecutive times (and from ``t0`` to ``ts[0]``).
        delta0 : (d,), optional
            :math:`\\delta_0 = s_q(x) - s_p(x)`; carried as :math:`\\dot\\delta = -\\nabla v^\\top
            \\delta` (one VJP per evaluation).
        score0 : (d,), optional
            :math:`s_p(x)`; carried with the score ODE (second derivatives of ``v``).
        jacobian : bool
            Also carry :math:`J_t` (d, d) with :math:`\\dot J = \\nabla v\\,J`.
        log_det : bool
            Carry :math:`\\log|\\det J_t|`.

        Returns
        -------
        Trajectory

        Examples
        --------
        For :math:`v = -z`, :math:`J_t = e^{-t}I` and :math:`\\delta_t = e^{t}\\delta_0`:

        >>> import jax.numpy as jnp
        >>> import numpy as np
        >>> flow = ContinuousFlow(lambda z, t: -z)
        >>> tr = flow.trajectory(jnp.ones(2), [0.0, 1.0], delta0=jnp.ones(2), jacobian=True)
        >>> np.asarray(tr.J[-1]).round(4), np.asarray(tr.delta[-1]).round(4)
        (array([[0.3679, 0.    ], [0.    , 0.3679]], dtype=float32),
         array([2.7183, 2.7183], dtype=float32))
        """
        x = self._point(x, "x")
        extra = [
            None if a is None else self._point(a, name, like=x)
            for a, name in ((delta0, "delta0"), (score0, "score0"))
        ]
        d = x.shape[0]
        y0 = _State(
            x,
            jnp.zeros((), x.dtype) if log_det else None,
            jnp.eye(d, dtype=x.dtype) if jacobian else None,
            *extra,
        )
        grid = self._grid(ts)
        start = grid[0] != self.t0
        ys = self._run(y0, np.concatenate([[self.t0], grid]) if start else grid)
        if start:
            ys = jax.tree.map(lambda a: a[1:], ys)
        _check_point("ContinuousFlow.trajectory", *jax.tree.leaves(ys))
        return Trajectory(jnp.asarray(grid, x.dtype), *ys)

    def _point(self, a: ArrayLike, name: str, like: jax.Array | None = None) -> jax.Array:
        """``a`` as one float point; checked against ``v`` or, if given, against the point
        ``like`` (whose shape and dtype it takes)."""
        shape = None if like is None else like.shape
        if np.ndim(a) != 1 or (shape is not None and np.shape(a) != shape):
            want = "one point of shape (d,)" if shape is None else f"shape {shape}, like x"
            raise ValueError(
                f"ContinuousFlow: {name} must have {want}; got shape {np.shape(a)}. For a batch "
                "use jax.vmap."
            )
        if like is not None:
            return jnp.asarray(a, dtype=like.dtype)
        a = jnp.asarray(a, dtype=float_dtype(a))
        _check_velocity(self.v, a)
        return a

    def _grid(self, ts: ArrayLike | None) -> np.ndarray:
        """Check the output times (concrete, strictly monotone, starting at or after ``t0``)."""
        if ts is None:
            return np.array([self.t0, self.t1])
        if isinstance(ts, jax.core.Tracer):
            raise ValueError(
                "ContinuousFlow: ts must be concrete (a list or numpy array), "
                "not traced; build the time grid outside jit."
            )
        grid = np.asarray(ts, dtype=np.float64)
        sign = np.sign(self.t1 - self.t0)
        if grid.ndim != 1 or grid.size < 1 or not np.all(np.isfinite(grid)):
            raise ValueError(f"ContinuousFlow: ts must be a 1-D array of finite times; got {ts!r}.")
        if np.any(sign * np.diff(grid) <= 0) or sign * (grid[0] - self.t0) < 0:
            raise ValueError(
                f"ContinuousFlow: ts must run strictly from t0={self.t0} towards t1={self.t1} "
                f"(no repeats, none before t0); got {grid}. E.g. np.linspace(t0, t1, 11)."
            )
        return grid

    def _run(self, y0: _State, grid: np.ndarray) -> _State:
        """The state at every time of ``grid`` (``grid[0]`` is the start), stacked on axis 0."""
        try:
            return self._solve(y0, jnp.asarray(grid, y0.z.dtype), bool(grid[-1] < grid[0]))
        except TypeError as err:
            if "forward-mode" not in str(err):
                raise
            raise ValueError(
                "ContinuousFlow(solver='dopri5') supports reverse-mode derivatives only (grad, "
                "vjp, jacrev): jax.experimental.ode.odeint is a custom_vjp function. Use "
                "solver='rk4' for jax.jacfwd / jvp (e.g. FlowDiffusion(ContinuousFlow(v)))."
            ) from None

    def _solve_uncompiled(self, y0: _State, ts: jax.Array, backwards: bool) -> _State:
        """Compiled once per state structure and grid length; the times themselves are traced,
        so with RK4 the forward and the inverse map share one program."""
        f = partial(_rhs, self.v)
        if self.solver == "rk4":
            return _rk4(f, y0, ts, self.num_steps)
        if backwards:  # odeint needs increasing times: run s = -t
            f, ts = _reversed(f), -ts
        return odeint(f, y0, ts, rtol=self.rtol, atol=self.atol)

    def __repr__(self) -> str:
        name = getattr(self.v, "__name__", "v")
        return f"ContinuousFlow({name}, t1={self.t1}, t0={self.t0}, solver={self.solver!r})"


def dsm_path(
    flow: ContinuousFlow,
    x: ArrayLike,
    scores_q: ArrayLike,
    scores_p: ArrayLike,
    ts: ArrayLike | None = None,
    weights: ArrayLike | None = None,
) -> DSMPath:
    """:math:`D(t) = \\mathbb E_q\\|\\delta_t\\|^2` and :math:`\\dot D(t)` along a continuous flow.

    Each particle carries :math:`(z_t, \\delta_t)` with :math:`\\delta_0 = s_q(x) - s_p(x)` and
    :math:`\\dot\\delta = -\\nabla v^\\top\\delta` (one VJP), and at each output time

    .. math:: D(t) = \\sum_i w_i\\|\\delta_{t,i}\\|^2, \\qquad
        \\dot D(t) = -2\\sum_i w_i\\,\\delta_{t,i}^\\top\\nabla_z v(z_{t,i}, t)\\,\\delta_{t,i}

    (one JVP), so no :math:`d\\times d` matrix is formed. :math:`D(t)` is
    :math:`\\mathrm{SM}(q_t, p_t) = \\mathrm{DSM}_{J_t^{-1}}(q, p)` (docs/math.md §5); only the
    symmetric part of :math:`\\nabla v` changes it.

    Parameters
    ----------
    flow : ContinuousFlow
        The velocity field, start time ``flow.t0`` and solver.
    x : (n, d)
        Samples of :math:`q`.
    scores_q, scores_p : (n, d)
        :math:`s_q(x_i)` and :math:`s_p(x_i)`.
    ts : (k,) array, optional
        Output times as in :meth:`ContinuousFlow.trajectory`; default 11 equally spaced times
        from ``t0`` to ``t1``. RK4 takes ``flow.num_steps`` steps between consecutive times.
    weights : (n,), optional
        Non-negative weights summing to one; default :math:`1/n`.

    Returns
    -------
    DSMPath
        ``t``, ``D`` and ``D_dot``, each (k,).

    Examples
    --------
    For :math:`v = -\\lambda z`, :math:`D(t) = e^{2\\lambda t}D(0)`:

    >>> import jax.numpy as jnp
    >>> flow = ContinuousFlow(lambda z, t: -0.5 * z)
    >>> x = jnp.array([[0.0, 1.0], [1.0, -1.0]])
    >>> path = dsm_path(flow, x, -x, -x / 4, ts=[0.0, 0.5, 1.0])
    >>> float(path.D[0])  # mean of |x_i - x_i / 4|^2
    0.84375
    >>> bool(jnp.allclose(path.D, path.D[0] * jnp.exp(path.t), rtol=1e-5))
    True
    >>> bool(jnp.allclose(path.D_dot, path.D, rtol=1e-5))  # dD/dt = 2 lambda D
    True
    """
    if not isinstance(flow, ContinuousFlow):
        raise ValueError(f"dsm_path needs a ContinuousFlow; got {type(flow).__name__}.")
    dtype = float_dtype(x, scores_q, scores_p)
    x = as_points(x, dtype=dtype)
    s_q, s_p = (
        _scores(x, s, name, dtype) for s, name in ((scores_q, "scores_q"), (scores_p, "scores_p"))
    )
    grid = flow._grid(np.linspace(flow.t0, flow.t1, 11) if ts is None else ts)
    w = check_weights(weights, x.shape[0], dtype)
    delta, D, D_dot = _dsm_path(flow, tuple(grid.tolist()), x, s_q - s_p, w)
    check_finite(delta, "The carried score differences delta_t", _BLOWUP)
    return DSMPath(jnp.asarray(grid, dtype), D, D_dot)


@partial(jax.jit, static_argnums=(0, 1))
def _dsm_path(
    flow: ContinuousFlow, grid: tuple[float, ...], x: jax.Array, delta0: jax.Array, w: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-particle :math:`\\delta_t` (n, k, d), :math:`D` (k,) and :math:`\\dot D` (k,)."""

    def one(x: jax.Array, d0: jax.Array) -> tuple[jax.Array, jax.Array]:
        tr = flow.trajectory(x, grid, delta0=d0, log_det=False)
        return tr.delta, jax.vmap(partial(_strain, flow.v))(tr.z, tr.t, tr.delta)

    delta, strain = jax.vmap(one)(x, delta0)
    return delta, jnp.einsum("n,nkd->k", w, delta**2), -2.0 * (w @ strain)


def _strain(v: Velocity, z: jax.Array, t: jax.Array, delta: jax.Array) -> jax.Array:
    """:math:`\\delta^\\top\\nabla_z v(z, t)\\,\\delta` by one JVP."""
    return delta @ jax.jvp(lambda y: _velocity(v, y, t), (z,), (delta,))[1]


def _velocity(v: Velocity, z: jax.Array, t: jax.Array) -> jax.Array:
    return jnp.asarray(v(z, t)).astype(z.dtype)


def _rhs(v: Velocity, y: _State, t: jax.Array) -> _State:
    """Time derivative of the augmented state (docs/math.md §5)."""

    def vel(z: jax.Array) -> jax.Array:
        return _velocity(v, z, t)

    def div(z: jax.Array) -> jax.Array:
        return jnp.trace(jax.jacfwd(vel)(z))

    dz, vjp = jax.vjp(vel, y.z)
    jac = None if y.J is None and y.log_det is None else jax.jacfwd(vel)(y.z)
    return _State(
        dz,
        None if y.log_det is None else jnp.trace(jac),
        None if y.J is None else jac @ y.J,
        None if y.delta is None else -vjp(y.delta)[0],
        None if y.score is None else -vjp(y.score)[0] - jax.grad(div)(y.z),
    )


def _rk4(f: OdeRhs, y0: _State, ts: jax.Array, num_steps: int) -> _State:
    """Classical RK4 with ``num_steps`` equal steps between consecutive ``ts``."""

    def axpy(a: jax.Array, k: _State, y: _State) -> _State:
        return jax.tree.map(lambda ki, yi: yi + a * ki, k, y)

    def step(y: _State, t: jax.Array, h: jax.Array) -> _State:
        k1 = f(y, t)
        k2 = f(axpy(h / 2, k1, y), t + h / 2)
        k3 = f(axpy(h / 2, k2, y), t + h / 2)
        k4 = f(axpy(h, k3, y), t + h)
        incr = jax.tree.map(lambda a, b, c, e: a + 2 * b + 2 * c + e, k1, k2, k3, k4)
        return axpy(h / 6, incr, y)

    def interval(y: _State, ab: tuple[jax.Array, jax.Array]) -> tuple[_State, _State]:
        a, b = ab
        h = (b - a) / num_steps
        steps = a + h * jnp.arange(num_steps, dtype=ts.dtype)
        y, _ = jax.lax.scan(lambda c, t: (step(c, t, h), None), y, steps)
        return y, y

    _, ys = jax.lax.scan(interval, y0, (ts[:-1], ts[1:]))
    return jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), y0, ys)


def _reversed(f: OdeRhs) -> OdeRhs:
    """The right-hand side in reversed time :math:`s = -t`: :math:`dy/ds = -f(y, -s)`."""
    return lambda y, s: jax.tree.map(jnp.negative, f(y, -s))


def _time(t: float, name: str) -> float:
    try:
        value = float(t)
    except (TypeError, jax.errors.ConcretizationTypeError):
        raise ValueError(
            f"ContinuousFlow: {name} must be a concrete number (not a traced or array value); "
            f"got {t!r}."
        ) from None
    if not np.isfinite(value):
        raise ValueError(f"ContinuousFlow: {name} must be finite; got {value}.")
    return value


def _check_velocity(v: Velocity, x: jax.Array) -> None:
    """``v(z, t)`` must map a (d,) point and a scalar time to a (d,) velocity."""
    d = x.shape[0]
    out = jax.eval_shape(v, jax.ShapeDtypeStruct((d,), x.dtype), jax.ShapeDtypeStruct((), x.dtype))
    if getattr(out, "shape", None) != (d,):
        raise ValueError(
            f"ContinuousFlow: v(z, t) must return a ({d},) velocity for a ({d},) point z and a "
            f"scalar time t; it returned {getattr(out, 'shape', type(out).__name__)}."
        )


def _check_point(name: str, *arrays: jax.Array) -> None:
    """Raise if a concrete single-point result is not finite."""
    if any(isinstance(a, jax.core.Tracer) for a in arrays):
        return
    if not all(np.all(np.isfinite(np.asarray(a))) for a in arrays):
        raise ValueError(f"{name}: the ODE solution is NaN or inf. {_BLOWUP}")


def _scores(x: jax.Array, s: ArrayLike, name: str, dtype: jnp.dtype) -> jax.Array:
    """:func:`check_pair`, with the argument's name in the message."""
    try:
        return check_pair(x, s, dtype)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None
