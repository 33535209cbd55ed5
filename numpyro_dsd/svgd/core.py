"""Stein variational gradient descent: the pure functional core (BlackJAX-style ``init``/``step``).

SVGD (Liu & Wang 2016, docs/math.md §6.1) moves particles :math:`z_1..z_n` along

.. math:: \\phi(z) = \\frac1n\\sum_j\\big[k(z_j, z)\\,s(z_j) + \\nabla_1 k(z_j, z)\\big],

the steepest descent direction of KL(q || p) in the unit ball of the kernel's RKHS; its rate
:math:`\\frac1n\\sum_i \\mathcal A_p\\phi(z_i)` is the KSD² V-statistic of the particles
(docs/math.md §6.2), so every step reports it at no extra pass. With a radial kernel
:math:`k = \\varphi((z-y)^\\top A(z-y))` the force is three matrix products,

.. math:: \\Phi = \\tfrac1n\\big[K S + 2(DZ - \\mathrm{diag}(D\\mathbf 1)Z)A\\big],\\qquad
    K_{ij} = \\varphi(t_{ij}),\\; D_{ij} = \\varphi'(t_{ij}),

never a per-pair derivative and never an ``(n, n, d)`` array: :math:`K`, :math:`D` and the
Stein kernel come from one tile of the Stein-kernel engine
(:func:`numpyro_dsd.stein.engine.kernel_force`, the features ``ksd`` uses), rows in blocks.

A *preconditioner* (:mod:`numpyro_dsd.svgd.preconditioners`) is a bijection :math:`z = T(x)`: the
particles move in :math:`z` under the pushed-forward target :math:`T_\\#p` (score by Lemma 3.1, the
log-determinant included), which is matrix-kernel SVGD in :math:`x` with
:math:`K(x, y) = J(x)^{-1}k(T x, T y)J(y)^{-\\top}` (docs/math.md §6.3). ``T(x) = L^\\top x`` is
Wang et al. (2019)'s constant preconditioner :math:`Q = LL^\\top`; a normalizing flow learns the
matrix.

The state is a NamedTuple of arrays and is complete: the particles, the kernel, the
preconditioner's parameters (a fitted flow's arrays, its architecture as static pytree data), the
optimizer's state, the step count and the ``rng_key`` every re-estimate derives its key from
(``fold_in(rng_key, step)``). So ``step`` composes with ``jax.lax.scan``, ``jit`` and ``vmap``::

    state = svgd.init(x0, log_prob, optax.adagrad(0.1), rng_key=jax.random.key(0))
    step = svgd.build_step(log_prob, optax.adagrad(0.1))
    state, infos = jax.lax.scan(lambda s, _: step(s), state, length=1000)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jax.typing import ArrayLike

from numpyro_dsd.flows.bijections import latent_score
from numpyro_dsd.stein.engine import FORCE_ROW_BLOCK, kernel_force
from numpyro_dsd.stein.kernels import (
    IMQ,
    Gaussian,
    GaussianProfile,
    IMQProfile,
    bandwidth_matrix,
    svgd_kernel,
)
from numpyro_dsd.stein.kernels import default_kernel as stein_default_kernel
from numpyro_dsd.svgd.preconditioners import Preconditioner

__all__ = [
    "SVGDState",
    "SVGDInfo",
    "Monitor",
    "monitor_ksd",
    "ksd_rising",
    "default_kernel",
    "stein_force",
    "langevin_noise",
    "check_noise_step",
    "init",
    "build_step",
    "moment_force",
    "guarded_step",
    "latent_scores",
    "as_optax",
    "estimate",
    "reestimate",
    "reestimate_due",
    "steps_to_reestimate",
    "shard_state",
    "kernel_matrix",
    "to_latent",
    "from_latent",
]

LogProb = Callable[[jax.Array], jax.Array]
Profile = IMQProfile | GaussianProfile

#: Points the median heuristic looks at (evenly spaced particles); the median of all n² distances
#: dominated the step at 800 particles.
BANDWIDTH_SUBSAMPLE = 256
#: Rows of the kernel matrix formed at once.
ROW_BLOCK = FORCE_ROW_BLOCK
#: The monitor's kernel (:func:`monitor_ksd`): the KSD entry points' default,
#: :func:`numpyro_dsd.stein.kernels.default_kernel`, IMQ with c = 1, beta = -1/2 and the median
#: bandwidth (frozen on the initial particles).
DEFAULT_KERNEL_BANDWIDTH = stein_default_kernel().bandwidth
_IMQ = stein_default_kernel().profile
#: :func:`ksd_rising`: a rise at each of this many consecutive checks ...
DIVERGENCE_CHECKS = 5
#: ... ending at least this many times the run's lowest KSD is a divergence.
DIVERGENCE_FACTOR = 1.5


_GAUSSIAN = GaussianProfile()


class Monitor(NamedTuple):
    """The fixed frame in which a run's quality is measured (:func:`monitor_ksd`): the
    preconditioner's parameters at ``init`` (:math:`T_0`; ``()`` for none) and the kernel matrix
    :math:`A_0` of :func:`numpyro_dsd.stein.kernels.default_kernel` (IMQ, median bandwidth)
    frozen on the initial particles in :math:`T_0`'s coordinates."""

    precond_params: Any
    kernel_matrix: jax.Array


class SVGDState(NamedTuple):
    """Everything a step needs, as arrays.

    Attributes
    ----------
    particles : (n, d)
        Particles in the space SVGD runs in: latent :math:`z = T(x)` with a preconditioner, the
        model's flat unconstrained space without one.
    kernel_matrix : (d, d)
        :math:`A = \\Gamma^{-1}` of the kernel in use (the median heuristic's last value).
    precond_params : pytree
        The preconditioner's complete parameters: ``()`` for none or a flow object given as
        configuration; :class:`~numpyro_dsd.svgd.preconditioners.Linear` (:math:`V, w, c`) for a
        constant one; :class:`~numpyro_dsd.svgd.preconditioners.FlowParams` (arrays, with the
        :class:`~numpyro_dsd.flows.FlowSpec` as static data) for a fitted or refitted flow.
    opt_state : pytree
        The optimizer's state.
    step : int scalar
        Steps taken.
    rng_key : PRNG key or None
        The key re-estimates derive theirs from: ``fold_in(rng_key, step)`` at step ``step``
        (None: no re-estimate needs one, e.g. a constant preconditioner).
    monitor : Monitor or None
        The fixed frame of :func:`monitor_ksd`, set by :func:`init`.
    """

    particles: jax.Array
    kernel_matrix: jax.Array
    precond_params: Any
    opt_state: Any
    step: jax.Array
    rng_key: Any = None
    monitor: Any = None


class SVGDInfo(NamedTuple):
    """Per-step record, taken at the particles *before* the step.

    Attributes
    ----------
    stein_force : scalar
        Root mean square :math:`\\sqrt{\\frac1n\\sum_i\\|\\phi(z_i)\\|^2}`.
    ksd_squared : scalar
        :math:`\\frac1n\\sum_i\\mathcal A_p\\phi(z_i) = \\hat V`, the KSD² V-statistic of the
        particles with the step's kernel (in latent space with a preconditioner: the diffusion KSD
        with :math:`M = J^{-1}`, Theorem 3.5).
    finite : bool scalar
        False if a score, the force, the new particles or the new optimizer state were not
        finite: the step was not taken and the state is unchanged. (When the *scores* at the
        state are not finite, the state itself cannot be continued from: ``SVGD.run`` then
        keeps the state before it, docs/svgd.md "When a run stops".)
    """

    stein_force: jax.Array
    ksd_squared: jax.Array
    finite: jax.Array


def default_kernel() -> Gaussian:
    """SVGD's default kernel, :func:`numpyro_dsd.stein.kernels.svgd_kernel` (the one place the
    defaults are stated): :math:`\\exp(-\\|x - y\\|^2\\log n/\\ell^2)` with :math:`\\ell` the
    median distance, Liu & Wang (2016)'s, NumPyro's and BlackJAX's."""
    return svgd_kernel()


def stein_force(
    particles: ArrayLike,
    scores: ArrayLike,
    kernel_matrix: ArrayLike,
    profile: Profile = _GAUSSIAN,
    block_size: int = ROW_BLOCK,
    linear_weight: float = 0.0,
    *,
    isotropic: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """SVGD force and the KSD² V-statistic of the particles, in closed form.

    .. math::
        \\phi(z_i) = \\frac1n\\sum_j\\big[k(z_j, z_i)s_j + 2\\varphi'(t_{ij})A(z_j - z_i)\\big],
        \\qquad
        \\hat V = \\frac1{n^2}\\sum_{ij}k^0(z_i, z_j) = \\frac1n\\sum_i\\mathcal A_p\\phi(z_i)

    with :math:`k^0 = k\\,s_i^\\top s_j + 2\\varphi'(p_j - p_i)^\\top r - 4\\varphi''\\|Ar\\|^2
    - 2\\varphi'\\operatorname{tr}A`, :math:`r = z_i - z_j`, :math:`p = As`,
    :math:`t_{ij} = r^\\top A r`. In matrix form, with :math:`K_{ij} = \\varphi(t_{ij})` and
    :math:`D_{ij} = \\varphi'(t_{ij})`,
    :math:`\\Phi = \\frac1n[KS + 2(DZ - \\mathrm{diag}(D\\mathbf 1)Z)A]`. Both come from the
    Stein-kernel engine (:func:`numpyro_dsd.stein.engine.kernel_force`: the identity-diffusion
    tile of :func:`~numpyro_dsd.ksd_squared` returns :math:`K`, :math:`D` and :math:`k^0`), rows
    formed ``block_size`` at a time, so memory is O(block_size · n) and time O(n² d).

    ``linear_weight`` :math:`w > 0` adds :math:`w\\,((z - \\bar z)^\\top(y - \\bar z) + 1)` to the
    kernel (:math:`\\bar z` the particles' mean, held fixed), which adds
    :math:`w[\\bar C(z_i - \\bar z) + \\bar s + (z_i - \\bar z)]` with
    :math:`\\bar C = \\frac1n\\sum_j s_j(z_j - \\bar z)^\\top` to the force and
    :math:`w[\\|\\bar C\\|_F^2 + \\|\\bar s\\|^2 + \\frac2n\\sum_i s_i^\\top(z_i - \\bar z) + d]` to
    :math:`\\hat V`: O(n d²). Its fixed points satisfy :math:`\\frac1n\\sum_i s_i = 0` and
    :math:`\\frac1n\\sum_i s_i(z_i - \\bar z)^\\top \\approx -I`, the Stein moment equations
    of a Gaussian, which counters SVGD's variance collapse in high dimension (Liu & Wang 2018,
    "Stein variational gradient descent as moment matching").

    Parameters
    ----------
    particles : (n, d)
        Points :math:`z_i` (latent, with a preconditioner).
    scores : (n, d)
        :math:`s_i = \\nabla\\log p(z_i)` of the target in that space.
    kernel_matrix : (d, d)
        :math:`A` of the kernel :math:`\\varphi((z-y)^\\top A(z-y))`.
    profile : IMQProfile or GaussianProfile
        ``kernel.profile``.
    block_size : int
        Rows of the kernel matrix formed at once.
    linear_weight : float
        Weight :math:`w \\ge 0` of the added linear kernel (default 0: the radial kernel only).
    isotropic : bool
        :math:`A = aI` (only ``A[0, 0]`` is read; ``kernel.isotropic``): cheaper tiles.

    Returns
    -------
    force : (n, d)
    ksd_squared : scalar

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> phi, v = stein_force(jnp.zeros((1, 2)), jnp.ones((1, 2)), jnp.eye(2))
    >>> phi  # one particle: k(z, z) s = s, gradient ascent
    Array([[1., 1.]], dtype=float32)
    """
    z, s = jnp.asarray(particles), jnp.asarray(scores)
    A = jnp.asarray(kernel_matrix, dtype=z.dtype)
    force, v = kernel_force(z, s, A, profile, isotropic=isotropic, block_size=block_size)
    if linear_weight:
        lin_force, lin_v = moment_force(z, s, jnp.ones(z.shape[1], bool))
        force, v = force + linear_weight * lin_force, v + linear_weight * lin_v
    return force, v


def langevin_noise(
    rng_key: jax.Array, particles: ArrayLike, kernel_matrix: ArrayLike, profile: Profile = _GAUSSIAN
) -> jax.Array:
    """:math:`L\\xi`: a draw with covariance :math:`K \\otimes I_d` across particles and
    coordinates, :math:`K_{ij} = \\varphi((z_i - z_j)^\\top A (z_i - z_j))` the kernel matrix
    of the particles and :math:`LL^\\top = K` (Cholesky, :math:`O(n^3)`); the noise of noisy SVGD
    (:func:`build_step`'s ``noise_step``, docs/math.md §6.6).

    Returns
    -------
    (n, d) array.

    Examples
    --------
    >>> z = jnp.array([[0.0], [10.0]])  # far apart: K = I, independent standard normals
    >>> langevin_noise(jax.random.key(0), z, jnp.eye(1)).shape
    (2, 1)
    """
    z = jnp.asarray(particles)
    A = jnp.asarray(kernel_matrix, z.dtype)
    q = jnp.einsum("id,de,ie->i", z, A, z)
    t = jnp.maximum(q[:, None] + q[None, :] - 2.0 * (z @ A @ z.T), 0.0)
    K = profile(t)[0]
    jitter = 10 * jnp.finfo(z.dtype).eps * z.shape[0]
    L = jnp.linalg.cholesky(K + jitter * jnp.eye(z.shape[0], dtype=z.dtype))
    return L @ jax.random.normal(rng_key, z.shape, z.dtype)


def as_optax(optim: Any) -> optax.GradientTransformation:
    """An optax ``GradientTransformation`` for ``optim``: optax as is, ``numpyro.optim`` wrapped.

    A ``numpyro.optim`` optimizer keeps the parameters in its state; the wrapper returns the
    difference it makes, so both kinds minimise the same way.
    """
    if isinstance(optim, optax.GradientTransformation):
        return optim
    if all(hasattr(optim, a) for a in ("init", "update", "get_params")):

        def update(g: jax.Array, state: Any, params: jax.Array | None = None) -> tuple:
            new = optim.update(g, state)
            return optim.get_params(new) - optim.get_params(state), new

        return optax.GradientTransformation(optim.init, update)
    raise ValueError(
        f"optim must be an optax GradientTransformation (e.g. optax.adagrad(0.1)) or a "
        f"numpyro.optim optimizer (e.g. numpyro.optim.Adagrad(0.1)); got {type(optim).__name__}."
    )


def latent_scores(
    particles: jax.Array,
    log_prob: LogProb,
    preconditioner: Preconditioner | None = None,
    params: Any = (),
) -> tuple[jax.Array, jax.Array]:
    """Data-space points :math:`x = G(z)` and latent scores :math:`s_{T_\\#p}(z)` (Lemma 3.1).

    Without a preconditioner :math:`x = z` and the score is :math:`\\nabla\\log p`.
    """
    score = jax.grad(log_prob)
    if preconditioner is None:
        return particles, jax.vmap(score)(particles)
    bij = preconditioner.bijection(params)
    return jax.vmap(lambda z: latent_score(bij, z, score))(particles)


def kernel_matrix(kernel: IMQ | Gaussian, z: jax.Array) -> jax.Array:
    """The kernel's :math:`A` on particles ``z`` (median heuristics on at most 256 of them)."""
    return kernel.bandwidth_matrix(z, BANDWIDTH_SUBSAMPLE).astype(z.dtype)


def init(
    position: ArrayLike,
    log_prob: LogProb,
    optim: Any,
    kernel: IMQ | Gaussian | None = None,
    preconditioner: Preconditioner | None = None,
    *,
    rng_key: jax.Array | None = None,
    precond_params: Any = None,
) -> SVGDState:
    """Initial state from data-space particles ``position`` (n, d).

    The preconditioner is estimated on ``position`` (or ``precond_params`` is used) and the
    particles mapped to its latent space :math:`z = T(x)`; the kernel's :math:`A` is set on the
    latent particles.

    Parameters
    ----------
    position : (n, d)
        Data-space particles.
    log_prob : callable
        ``(d,) -> ()``, the target's log density in the data space.
    optim : optax GradientTransformation or numpyro.optim optimizer
        Its state is initialised on the latent particles.
    kernel : IMQ or Gaussian, optional
        Default :func:`~numpyro_dsd.svgd.core.default_kernel`.
    preconditioner : Preconditioner, optional
        None runs in the data space.
    rng_key : PRNG key, optional
        Stored in the state; re-estimates that need randomness (a flow refit) use
        ``fold_in(rng_key, step)``.
    precond_params : pytree, optional
        The preconditioner's parameters, instead of estimating them (e.g. a flow fitted on the
        model: :class:`~numpyro_dsd.svgd.preconditioners.FlowParams`).

    Returns
    -------
    SVGDState

    Examples
    --------
    >>> import jax, jax.numpy as jnp, optax
    >>> log_prob = lambda x: -0.5 * jnp.sum(x**2)
    >>> x0 = jnp.ones((5, 2)) * jnp.arange(5.0)[:, None]
    >>> state = init(x0, log_prob, optax.sgd(0.1), rng_key=jax.random.key(0))
    >>> state.particles.shape, int(state.step)
    ((5, 2), 0)
    """
    x = jnp.asarray(position)
    kernel = default_kernel() if kernel is None else kernel
    params: Any = precond_params
    if params is None:
        params = () if preconditioner is None else estimate(preconditioner, x, log_prob)
    z = x if preconditioner is None else to_latent(preconditioner, params, x)
    opt = as_optax(optim)
    monitor = Monitor(params, bandwidth_matrix(DEFAULT_KERNEL_BANDWIDTH, z).astype(z.dtype))
    return SVGDState(
        z, kernel_matrix(kernel, z), params, opt.init(z), jnp.zeros((), jnp.int32), rng_key, monitor
    )


def monitor_ksd(
    state: SVGDState, log_prob: LogProb, preconditioner: Preconditioner | None = None
) -> jax.Array:
    """KSD of the particles in one fixed frame: comparable across steps, bandwidth updates and
    preconditioner re-estimates (docs/svgd.md, "Is the run converging?").

    With :math:`x_i` the data-space particles, :math:`z_i = T_0(x_i)` and the scores
    :math:`s_i` of :math:`T_{0\\#}p` (Lemma 3.1), it is
    :math:`\\big(\\frac1{n^2}\\sum_{ij}k^0(z_i, z_j)\\big)^{1/2}` for the IMQ kernel
    :math:`(1 + (z - y)^\\top A_0 (z - y))^{-1/2}`: the diffusion KSD with
    :math:`M = J_{T_0}^{-1}` (Theorem 3.5), where :math:`T_0` and :math:`A_0` are fixed at
    :func:`init` (:class:`Monitor`). The step's own ``SVGDInfo.ksd_squared`` uses the current
    bandwidth and coordinates, so it can fall while the particles get worse.

    Returns
    -------
    Scalar: the KSD (the square root of the V-statistic), in the particles' dtype.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, optax
    >>> log_prob = lambda x: -0.5 * jnp.sum(x**2)
    >>> x0 = jax.random.normal(jax.random.key(0), (200, 2))
    >>> state = init(x0, log_prob, optax.sgd(0.1))
    >>> bool(monitor_ksd(state, log_prob) < monitor_ksd(state._replace(particles=x0 + 1), log_prob))
    True
    """
    mon = state.monitor
    x = from_latent(preconditioner, state.precond_params, state.particles)
    z = x if preconditioner is None else to_latent(preconditioner, mon.precond_params, x)
    _, s = latent_scores(z, log_prob, preconditioner, mon.precond_params)
    _, v = kernel_force(z, s, mon.kernel_matrix, _IMQ, block_size=ROW_BLOCK)
    return jnp.sqrt(jnp.maximum(v, 0.0))


def ksd_rising(
    values: ArrayLike, checks: int = DIVERGENCE_CHECKS, factor: float = DIVERGENCE_FACTOR
) -> bool:
    """Whether a run's :func:`monitor_ksd` series shows a sustained rise: it went up at each of
    the last ``checks`` checks and ends at least ``factor`` times its minimum so far.

    Examples
    --------
    >>> ksd_rising([5.0, 1.0, 1.2, 1.4, 1.7, 2.0, 2.4]), ksd_rising([5.0, 1.0, 1.1, 0.9, 1.0])
    (True, False)
    """
    v = np.asarray(values, dtype=float)
    if v.size <= checks:
        return False
    tail = v[-(checks + 1) :]
    return bool(np.all(np.diff(tail) > 0) and tail[-1] >= factor * np.min(v))


def estimate(preconditioner: Preconditioner, x: jax.Array, log_prob: LogProb) -> Any:
    """``preconditioner.estimate(x, log_prob)``, jitted (an eager ``vmap`` of ``jax.hessian``
    takes seconds)."""
    return jax.jit(lambda a: preconditioner.estimate(a, log_prob))(x)


def to_latent(preconditioner: Preconditioner, params: Any, x: jax.Array) -> jax.Array:
    """:math:`z = T(x)` for every row of ``x``."""
    bij = preconditioner.bijection(params)
    return jax.vmap(lambda xi: bij.transform_and_log_det(xi)[0])(x)


def from_latent(preconditioner: Preconditioner | None, params: Any, z: jax.Array) -> jax.Array:
    """:math:`x = T^{-1}(z)` for every row of ``z`` (``z`` itself without a preconditioner)."""
    if preconditioner is None:
        return z
    bij = preconditioner.bijection(params)
    return jax.vmap(lambda zi: bij.inverse_and_log_det(zi)[0])(z)


def reestimate(
    state: SVGDState,
    log_prob: LogProb,
    optim: Any,
    kernel: IMQ | Gaussian | None,
    preconditioner: Preconditioner,
) -> tuple[SVGDState, Any]:
    """Re-estimate the preconditioner at the state's particles: the one re-estimation step,
    inside the jitted step (``preconditioner.in_step``) or between chunks (a flow refit).

    With :math:`x = T_{\\text{old}}^{-1}(z)`: new parameters
    ``preconditioner.reestimate(params, x, log_prob, fold_in(state.rng_key, state.step))``,
    particles re-mapped :math:`z = T_{\\text{new}}(x)`, the kernel's :math:`A` re-set on them
    and the optimizer state reset (its statistics belong to the old coordinates). The data-space
    particles do not move.

    Returns
    -------
    state : SVGDState
    record : any
        What the preconditioner reports (a :class:`~numpyro_dsd.flows.FlowFit` for a flow
        refit, else None).

    Examples
    --------
    >>> import jax, jax.numpy as jnp, optax
    >>> from numpyro_dsd.svgd.preconditioners import ConstantPreconditioner
    >>> log_prob = lambda x: -0.5 * (x[0] ** 2 + 100 * x[1] ** 2)
    >>> x0 = jax.random.normal(jax.random.key(0), (8, 2))
    >>> pre = ConstantPreconditioner()
    >>> state = init(x0, log_prob, optax.sgd(0.1), preconditioner=pre)
    >>> new, _ = reestimate(state, log_prob, optax.sgd(0.1), None, pre)
    >>> bool(jnp.allclose(from_latent(pre, new.precond_params, new.particles), x0, atol=1e-5))
    True
    """
    kernel = default_kernel() if kernel is None else kernel
    key = None if state.rng_key is None else jax.random.fold_in(state.rng_key, state.step)
    x = from_latent(preconditioner, state.precond_params, state.particles)
    params, record = preconditioner.reestimate(state.precond_params, x, log_prob, key)
    z = to_latent(preconditioner, params, x)
    new = state._replace(
        particles=z,
        kernel_matrix=kernel_matrix(kernel, z),
        precond_params=params,
        opt_state=as_optax(optim).init(z),
    )
    return new, record


def _between_chunks(preconditioner: Preconditioner | None) -> int | None:
    """The cadence of re-estimates that run between jitted chunks (None: there are none)."""
    if preconditioner is None or not preconditioner.every or preconditioner.in_step:
        return None
    return preconditioner.every


def reestimate_due(preconditioner: Preconditioner | None, step: int) -> bool:
    """Whether a re-estimate that runs *between* jitted chunks (``preconditioner.every`` set,
    ``preconditioner.in_step`` False: a flow refit) is due before step ``step`` is taken:
    ``step`` a positive multiple of ``every``.

    A loop calls :func:`reestimate` when this holds, then runs at most
    :func:`steps_to_reestimate` steps in one jitted chunk (``SVGD.run`` does).

    Examples
    --------
    >>> from numpyro_dsd.svgd.preconditioners import FlowPreconditioner
    >>> pre = FlowPreconditioner(refit_every=10)
    >>> reestimate_due(pre, 0), reestimate_due(pre, 13), reestimate_due(pre, 20)
    (False, False, True)
    """
    every = _between_chunks(preconditioner)
    return bool(every and step > 0 and step % every == 0)


def steps_to_reestimate(preconditioner: Preconditioner | None, step: int) -> int | None:
    """Steps from ``step`` to the next between-chunks re-estimate after it (see
    :func:`~numpyro_dsd.svgd.core.reestimate_due`); None if there is none (no preconditioner, no
    cadence, or re-estimates inside the step).

    Examples
    --------
    >>> from numpyro_dsd.svgd.preconditioners import ConstantPreconditioner, FlowPreconditioner
    >>> pre = FlowPreconditioner(refit_every=10)
    >>> steps_to_reestimate(pre, 0), steps_to_reestimate(pre, 13), steps_to_reestimate(pre, 20)
    (10, 7, 10)
    >>> steps_to_reestimate(ConstantPreconditioner(every=10), 3) is None  # inside the step
    True
    """
    every = _between_chunks(preconditioner)
    return None if every is None else every - step % every


def build_step(
    log_prob: LogProb,
    optim: Any,
    kernel: IMQ | Gaussian | None = None,
    preconditioner: Preconditioner | None = None,
    bandwidth_every: int = 1,
    linear_weight: float = 0.0,
    noise_step: float | None = None,
) -> Callable[[SVGDState], tuple[SVGDState, SVGDInfo]]:
    """One SVGD step ``state -> (state, info)``: pure and jittable.

    The step (i) re-estimates the preconditioner (:func:`reestimate`) when
    ``preconditioner.every`` divides the step count and ``preconditioner.in_step`` (a constant
    matrix; a flow refit is the loop's job, :func:`~numpyro_dsd.svgd.core.reestimate_due`), (ii)
    re-estimates a
    named kernel bandwidth (``"svgd"``, ``"med"``, ...) every ``bandwidth_every`` steps on at
    most 256 particles, (iii) computes :func:`stein_force` on the latent scores, and (iv) moves the
    particles by the optimizer's update for the *loss gradient* :math:`-\\phi`. If anything is
    not finite the state is returned unchanged and ``info.finite`` is False.

    Parameters
    ----------
    log_prob : callable
        ``(d,) -> ()``, the target's log density in the data space.
    optim : optax GradientTransformation or numpyro.optim optimizer
        Adagrad-type optimizers are the usual choice.
    kernel : IMQ or Gaussian, optional
        Default :func:`~numpyro_dsd.svgd.core.default_kernel`. A matrix ``bandwidth`` stays fixed.
    preconditioner : Preconditioner, optional
        :mod:`numpyro_dsd.svgd.preconditioners`; None runs in the data space.
    bandwidth_every : int
        Steps between re-estimates of a named kernel bandwidth.
    linear_weight : float
        Weight of a linear kernel added to ``kernel`` (:func:`stein_force`); 1 counters the
        variance collapse of SVGD in high dimension, best with a preconditioner.
    noise_step : float, optional
        Noisy SVGD with step :math:`h`: instead of the optimizer's update, the particles take
        the Euler-Maruyama step of the Langevin diffusion on all n particles jointly whose
        diffusion matrix is the kernel matrix (docs/math.md §6.6),

        .. math:: z_i \\leftarrow z_i + h\\,b_i\\min\\Big(1, \\frac{2\\sqrt{2hd}}{h\\|b_i\\|}\\Big)
            + \\sqrt{2h}\\,(L\\xi)_i, \\qquad b = n\\Phi,\\ LL^\\top = K,\\ \\xi \\sim N(0, I),

        whose drift is n times the SVGD force and whose invariant law is :math:`p^{\\otimes n}`:
        the particles become independent draws of the target (up to an :math:`O(h)` bias), so
        they cannot collapse, on any target. The drift step is capped at twice the noise's typical
        length :math:`\\sqrt{2hd}` (a taming, as in Hutzenthaler, Jentzen & Kloeden 2012): far
        from the target, where the scores are large, a particle moves a bounded distance per
        step; near it the cap is not reached (the drift step is about :math:`h\\sqrt d` on a
        standardised target) and the step is Euler-Maruyama's. The
        noise key is ``fold_in(fold_in(state.rng_key, step), 1)``; ``optim`` is not used (its
        state is kept as it is). Not with ``linear_weight``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, optax
    >>> log_prob = lambda x: -0.5 * jnp.sum(x**2)
    >>> x0 = jax.random.normal(jax.random.key(0), (50, 2)) + 3.0
    >>> step = jax.jit(build_step(log_prob, optax.sgd(0.5)))
    >>> state, info = step(init(x0, log_prob, optax.sgd(0.5)))
    >>> state, infos = jax.lax.scan(lambda s, _: step(s), state, length=200)
    >>> bool(jnp.abs(state.particles.mean(0)).max() < 0.1), bool(infos.finite.all())
    (True, True)
    """
    kernel = default_kernel() if kernel is None else kernel
    opt = as_optax(optim)
    check_noise_step(noise_step, linear_weight)
    adaptive = isinstance(kernel.bandwidth, str) and kernel.bandwidth != "id"
    in_step = preconditioner is not None and preconditioner.in_step
    every = preconditioner.every if in_step else None

    def reestimated(s: SVGDState) -> SVGDState:
        return reestimate(s, log_prob, opt, kernel, preconditioner)[0]

    def step(state: SVGDState) -> tuple[SVGDState, SVGDInfo]:
        if every:
            due = (state.step > 0) & (state.step % every == 0)
            state = jax.lax.cond(due, reestimated, lambda s: s, state)
        z = state.particles
        A = state.kernel_matrix
        if adaptive:
            due = state.step % bandwidth_every == 0
            A = jax.lax.cond(due, lambda: kernel_matrix(kernel, z), lambda: A)
        _, s = latent_scores(z, log_prob, preconditioner, state.precond_params)
        phi, v = stein_force(
            z, s, A, kernel.profile, linear_weight=linear_weight, isotropic=kernel.isotropic
        )
        if noise_step is None:
            updates, opt_state = opt.update(-phi, state.opt_state, z)
            new_z = optax.apply_updates(z, updates)
        else:
            noise = langevin_noise(_noise_key(state), z, A, kernel.profile)
            drift = noise_step * z.shape[0] * phi
            cap = 2.0 * jnp.sqrt(2.0 * noise_step * z.shape[1])  # twice the noise's typical norm
            length = jnp.linalg.norm(drift, axis=1, keepdims=True)
            drift = drift * jnp.minimum(1.0, cap / jnp.maximum(length, cap))
            new_z = z + drift + jnp.sqrt(2.0 * noise_step) * noise
            opt_state = state.opt_state
        new = (new_z, A, state.precond_params, opt_state, state.step + 1)
        kept, info = guarded_step(new, tuple(state)[:5], s, phi, v)
        return SVGDState(*kept, state.rng_key, state.monitor), info

    return step


def guarded_step(
    new: Any, old: Any, scores: jax.Array, phi: jax.Array, v: jax.Array
) -> tuple[Any, SVGDInfo]:
    """``new`` if the scores, the force and every float array of ``new`` (the new particles,
    the optimizer state, ...) are finite, else ``old`` (a step that is not taken), and the
    step's :class:`SVGDInfo` (:math:`\\sqrt{\\tfrac1n\\sum_i\\|\\phi_i\\|^2}`, ``v``, finite):
    the guard of :func:`build_step` and of the finish (:mod:`numpyro_dsd.svgd.finishing`). An
    optimizer state is checked too: adagrad's sum of squares can overflow to inf while the
    particles stay finite, and every later update is then 0.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> z, phi = jnp.zeros((2, 1)), jnp.ones((2, 1))
    >>> kept, info = guarded_step(z + jnp.inf, z, phi, phi, jnp.asarray(1.0))
    >>> kept.tolist(), bool(info.finite)
    ([[0.0], [0.0]], False)
    """
    finite = _all_finite((scores, phi, new))
    kept = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    force = jnp.sqrt(jnp.mean(jnp.sum(phi**2, axis=1)))
    return kept, SVGDInfo(force, v, finite)


def _all_finite(tree: Any) -> jax.Array:
    """Whether every float array in ``tree`` is finite (a bool scalar; integer leaves pass)."""
    leaves = [jnp.asarray(leaf) for leaf in jax.tree.leaves(tree)]
    checks = [jnp.all(jnp.isfinite(a)) for a in leaves if jnp.issubdtype(a.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


def moment_force(
    particles: ArrayLike, scores: ArrayLike, joint: ArrayLike
) -> tuple[jax.Array, jax.Array]:
    """SVGD force of a linear kernel, and its KSD²: the residual of the Stein moment equations
    (docs/math.md §6.7).

    With :math:`\\bar z` the particles' mean (held fixed), :math:`G` the coordinates marked in
    ``joint`` and the matrix-valued kernel :math:`K(z, y) = \\operatorname{diag}_a k_a(z, y)`,
    :math:`k_a = 1 + (z - \\bar z)_G^\\top(y - \\bar z)_G` for :math:`a \\in G` and
    :math:`k_a = 1 + (z_a - \\bar z_a)(y_a - \\bar z_a)` otherwise,

    .. math::
        \\phi(z) = \\bar s + \\big((C + I)\\odot M\\big)(z - \\bar z), \\qquad
        \\hat V = \\|(C + I)\\odot M\\|_F^2 + \\|\\bar s\\|^2,
        \\qquad C = \\frac1n\\sum_i s_i(z_i - \\bar z)^\\top,

    :math:`M_{ab} = 1` if :math:`a, b \\in G` or :math:`a = b`, else 0. The force vanishes
    exactly when :math:`\\frac1n\\sum_i s_i = 0` and :math:`C_{ab} = -\\delta_{ab}` wherever
    :math:`M_{ab} = 1`. ``joint`` all True is the linear kernel
    :math:`(z - \\bar z)^\\top(y - \\bar z) + 1` (Liu & Wang 2018; :func:`stein_force`'s
    ``linear_weight``): the whole covariance; all False the diagonal linear kernel: a location and
    a scale per coordinate. O(n d²).

    Parameters
    ----------
    particles : (n, d)
        Points :math:`z_i` (latent, with a preconditioner).
    scores : (n, d)
        :math:`s_i = \\nabla\\log p(z_i)` in that space.
    joint : (d,) bool
        The coordinates :math:`G` whose cross moments are fitted.

    Returns
    -------
    force : (n, d)
    residual : scalar
        :math:`\\hat V`.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> z = jnp.array([[-1.0], [1.0]])  # mean 0, variance 1: N(0, 1)'s equations hold
    >>> moment_force(z, -z, jnp.array([False]))[1]
    Array(0., dtype=float32)
    """
    z, s = jnp.asarray(particles), jnp.asarray(scores)
    g = jnp.asarray(joint, bool)
    M = (g[:, None] & g[None, :]) | jnp.eye(z.shape[1], dtype=bool)
    zc = z - jnp.mean(z, axis=0)
    s_bar = jnp.mean(s, axis=0)
    B = jnp.where(M, s.T @ zc / z.shape[0] + jnp.eye(z.shape[1], dtype=z.dtype), 0.0)
    return s_bar + zc @ B.T, jnp.sum(B**2) + s_bar @ s_bar


def check_noise_step(noise_step: float | None, linear_weight: float = 0.0) -> None:
    """Raise ``ValueError`` unless ``noise_step`` is None or a positive step size that comes
    without ``linear_weight`` (:func:`build_step`)."""
    if noise_step is None:
        return
    if not noise_step > 0:
        raise ValueError(f"noise_step must be a positive step size; got {noise_step!r}.")
    if linear_weight:
        raise ValueError(
            "noise_step and linear_weight do not combine: the noise already keeps the particles' "
            "spread, and linear_weight is for deterministic SVGD (noise_step=None; docs/svgd.md)."
        )


def _noise_key(state: SVGDState) -> jax.Array:
    """The noise key of a step: ``fold_in(fold_in(rng_key, step), 1)`` (a re-estimate at the
    same step uses ``fold_in(rng_key, step)``)."""
    if state.rng_key is None:
        raise ValueError("noisy SVGD needs a key: init(..., rng_key=jax.random.key(0)).")
    return jax.random.fold_in(jax.random.fold_in(state.rng_key, state.step), 1)


def shard_state(state: SVGDState, devices: Sequence[jax.Device] | None = None) -> SVGDState:
    """Place the state on ``devices`` (default all local devices), particles split by rows.

    Every ``(n, ...)`` leaf (particles, per-particle optimizer statistics) is sharded over a 1-D
    mesh ``"particles"``; the rest (the ``rng_key`` included) is replicated. ``jit`` then
    partitions the step: scores and force rows are computed where their particles live, and only
    the ``(n, d)`` particles and scores are gathered for the kernel matrix. With one device, or
    when the devices do not divide n, the state is returned as is.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, optax
    >>> state = init(jnp.ones((4, 2)) * jnp.arange(4.0)[:, None], lambda x: -x @ x, optax.sgd(0.1))
    >>> shard_state(state).particles.shape
    (4, 2)
    """
    devices = tuple(jax.local_devices() if devices is None else devices)
    n = state.particles.shape[0]
    if len(devices) < 2 or n % len(devices):
        return state
    mesh = Mesh(np.asarray(devices), ("particles",))
    rows = NamedSharding(mesh, PartitionSpec("particles"))
    replicated = NamedSharding(mesh, PartitionSpec())

    def place(leaf: Any) -> Any:
        leaf = jnp.asarray(leaf)
        return jax.device_put(leaf, rows if leaf.ndim and leaf.shape[0] == n else replicated)

    key = None if state.rng_key is None else jax.device_put(state.rng_key, replicated)
    return jax.tree.map(place, state._replace(rng_key=None))._replace(rng_key=key)
