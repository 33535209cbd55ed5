"""SVGD: ours (plain, constant and flow preconditioners) against NumPyro and BlackJAX, one run.

Every implementation moves the same 100 particles with the same kernel, optimizer and number of
steps on the same targets:

- kernel: the RBF kernel :math:`\\exp(-\\|x - y\\|^2\\log n/\\ell^2)`, :math:`\\ell` the median
  pairwise distance re-estimated every step (ours' default ``Gaussian(bandwidth="svgd")``,
  NumPyro's ``RBFKernel()``, BlackJAX's ``rbf_kernel`` + ``update_median_heuristic``; BlackJAX's
  median is applied once at ``init`` too, so that its first step does not use length scale 1);
- optimizer: ``optax.adagrad(0.1)`` everywhere (NumPyro through ``optax_to_numpyro``: its own
  ``numpyro.optim.Adagrad`` is jax.example_libraries' Adagrad, momentum 0.9 and no initial
  accumulator, a different optimizer);
- initial particles: one array ``u0`` uniform on :math:`[-2, 2]^d` (ours' default draw for the
  key used). The data-space methods (ours plain, NumPyro, BlackJAX) start at ``x = u0``; ours
  preconditioned start at ``z = u0`` in their latent space (ours' default ``init``), and the
  ``whitened`` row, ours plain on the exactly whitened Gaussian :math:`N(0, I)`, at ``z = u0``.

Targets (NumPyro models; BlackJAX gets the same log density through ``potential_energy``):
``gauss4``/``gauss10``, :math:`N(\\mu, \\Sigma)` with a random rotation and variances
``logspace(0, -4, d)`` (condition number 1e4); ``gauss50`` (speed only: independent
coordinates, ``Normal(mu, sd).to_event(1)`` with variances ``logspace(0, -1, 50)``, so that the
score is elementwise and a step times SVGD itself); ``gauss50dense`` (speed only: the same
variances rotated). The rotated Gaussians are written as a standard normal site plus a
``factor`` with the precision matrix (exactly :math:`N(\\mu, \\Sigma)`): a vmapped
``MultivariateNormal`` score is a batched triangular solve, whose time on XLA's CPU backend swings
between 0.1 and 17 ms at d = 50 from one compilation to the next and would dominate every
implementation's step;
``funnel`` (Neal, d = 10, :math:`v \\sim N(0, 3^2)`, :math:`x_i \\mid v \\sim N(0, e^{v/2})`);
``banana`` (:math:`x_1 \\sim N(0, 2^2)`, :math:`x_2 \\mid x_1 \\sim N(x_1^2/2, 1)`: means (0, 2),
sds (2, 3)); ``logreg`` (Bayesian logistic regression on scikit-learn's breast cancer data,
standardised features plus an intercept,
:math:`\\beta_j \\sim N(0, 1)`, d = 31; reference: NumPyro NUTS, 4 chains x 2000 draws, cached
under the system temp directory).

Reported: ms/step after compilation (the best of 3 jitted 100-step ``lax.scan`` chunks; NumPyro's
and BlackJAX's ``step`` and ours' ``numpyro_dsd.svgd.build_step`` in the same harness; "ours,
default" is the default's step, noisy SVGD, ``noise_step=0.05``, in the latent space of the
flow of "ours, flow", and its accuracy runs ``SVGD.run`` with the finish); the flow
fit (``SVGD.init`` with ``preconditioner="flow"``) in seconds and its final loss; at each step
budget the target's error measures (whitened mean / covariance errors for the Gaussians, v's mean
and sd for the funnel, standardised mean / sd errors for the banana, the standardised distance to
the NUTS means for the logistic regression) and a common KSD: ``numpyro_dsd.ksd`` with
``IMQ(bandwidth="med")`` frozen once per target on reference draws, at every method's final
particles with the target's exact scores (the row ``100 reference draws`` is its value at 100
exact / NUTS draws). Ours' accuracy runs go through the public ``SVGD.run``.

Usage::

    .venv/bin/python benchmarks/svgd.py            # full run (about 5 minutes on 2 cores)
    .venv/bin/python benchmarks/svgd.py --quick    # 3 targets, 100/200 steps: a smoke test
    .venv/bin/python benchmarks/svgd.py --targets gauss4 funnel
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

N = 100
STEP_SIZE = 0.1
CHUNK = 100
REPEAT = 3
CACHE = os.path.join(tempfile.gettempdir(), "numpyro_dsd_benchmarks")
CORES = len(os.sched_getaffinity(0))
TARGET_NAMES = ("gauss4", "gauss10", "gauss50", "gauss50dense", "funnel", "banana", "logreg")
QUICK_TARGETS = ("gauss4", "gauss50", "banana")


# --- targets ----------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    model: Callable
    args: tuple
    dim: int
    ref: np.ndarray  # reference draws (flat), for the frozen KSD kernel and the logreg truth
    mu: np.ndarray | None = None  # Gaussians: mean and Cholesky factor of the covariance
    chol: np.ndarray | None = None
    accuracy: bool = True
    log_prob: Callable = field(init=False)
    unravel: Callable = field(init=False)

    def __post_init__(self) -> None:
        from jax.flatten_util import ravel_pytree
        from numpyro.infer.util import potential_energy

        from numpyro_dsd import IMQ

        sample = _trace_sample(self.model, self.args)
        flat, self.unravel = ravel_pytree(sample)
        assert flat.shape == (self.dim,), (self.name, flat.shape)
        model, args, unravel = self.model, self.args, self.unravel
        self.log_prob = lambda x: -potential_energy(model, args, {}, unravel(x))
        self.kernel = IMQ(bandwidth="med").frozen(self.ref[:: max(1, len(self.ref) // 1000)])


def _trace_sample(model: Callable, args: tuple) -> dict[str, jax.Array]:
    from numpyro import handlers

    tr = handlers.trace(handlers.seed(model, 0)).get_trace(*args)
    return {k: s["value"] for k, s in tr.items() if s["type"] == "sample" and not s["is_observed"]}


def gaussian(name: str, d: int, low: float, accuracy: bool = True) -> Target:
    import numpyro
    import numpyro.distributions as dist

    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    sigma = (q * np.logspace(0, low, d)) @ q.T
    sigma = (sigma + sigma.T) / 2
    mu = rng.normal(size=d)
    chol = np.linalg.cholesky(sigma)
    mu_j = jnp.asarray(mu, jnp.float32)
    prec_j = jnp.asarray(np.linalg.inv(sigma), jnp.float32)

    def model() -> None:
        # The log density through its precision matrix: a vmapped MultivariateNormal score is a
        # batched triangular solve, whose XLA CPU time swings between 0.1 and 17 ms (d = 50).
        # N(0, I) site (samplable, for set-up) times exp(factor) = N(mu, Sigma) up to a constant.
        x = numpyro.sample("x", dist.Normal(0.0, 1.0).expand([d]).to_event(1))
        numpyro.factor("log_density", 0.5 * x @ x - 0.5 * (x - mu_j) @ prec_j @ (x - mu_j))

    ref = mu + rng.normal(size=(4000, d)) @ chol.T
    return Target(name, model, (), d, ref, mu, chol, accuracy)


def diagonal(name: str, d: int, low: float, seed: int, accuracy: bool = True) -> Target:
    """N(mu, diag(logspace(0, low, d))): an elementwise score, so a step times SVGD itself."""
    import numpyro
    import numpyro.distributions as dist

    rng = np.random.default_rng(seed)
    mu = rng.normal(size=d) if low else np.zeros(d)
    sd = np.sqrt(np.logspace(0, low, d))
    mu_j, sd_j = jnp.asarray(mu, jnp.float32), jnp.asarray(sd, jnp.float32)

    def model() -> None:
        numpyro.sample("x", dist.Normal(mu_j, sd_j).to_event(1))

    ref = mu + sd * rng.normal(size=(4000, d))
    return Target(name, model, (), d, ref, mu, np.diag(sd), accuracy)


def funnel() -> Target:
    import numpyro
    import numpyro.distributions as dist

    def model() -> None:
        v = numpyro.sample("v", dist.Normal(0.0, 3.0))
        numpyro.sample("x", dist.Normal(0.0, jnp.exp(v / 2)).expand([9]).to_event(1))

    rng = np.random.default_rng(2)
    v = 3.0 * rng.normal(size=(4000, 1))
    ref = np.concatenate([v, np.exp(v / 2) * rng.normal(size=(4000, 9))], axis=1)
    return Target("funnel", model, (), 10, ref)


def banana() -> Target:
    import numpyro
    import numpyro.distributions as dist

    def model() -> None:
        x1 = numpyro.sample("x1", dist.Normal(0.0, 2.0))
        numpyro.sample("x2", dist.Normal(0.5 * x1**2, 1.0))

    rng = np.random.default_rng(3)
    x1 = 2.0 * rng.normal(size=4000)
    ref = np.stack([x1, 0.5 * x1**2 + rng.normal(size=4000)], axis=1)
    return Target("banana", model, (), 2, ref)


def logreg_data() -> tuple[jax.Array, jax.Array]:
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    X = np.concatenate([np.ones((X.shape[0], 1)), X], axis=1)
    return jnp.asarray(X, jnp.float32), jnp.asarray(y, jnp.float32)


def logreg_model(X: jax.Array, y: jax.Array) -> None:
    import numpyro
    import numpyro.distributions as dist

    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)


def nuts_reference(X: jax.Array, y: jax.Array, chains: int, draws: int) -> np.ndarray:
    from numpyro.infer import MCMC, NUTS

    path = os.path.join(CACHE, f"logreg_nuts_{chains}x{draws}.npy")
    if os.path.exists(path):
        return np.load(path)
    mcmc = MCMC(
        NUTS(logreg_model),
        num_warmup=1000,
        num_samples=draws,
        num_chains=chains,
        chain_method="sequential",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), X, y)
    draws_ = np.asarray(mcmc.get_samples()["beta"], np.float64)
    os.makedirs(CACHE, exist_ok=True)
    np.save(path, draws_)
    return draws_


def logreg(quick: bool) -> Target:
    X, y = logreg_data()
    ref = nuts_reference(X, y, *((1, 1000) if quick else (4, 2000)))
    return Target("logreg", logreg_model, (X, y), X.shape[1], ref)


def make_target(name: str, quick: bool) -> Target:
    if name == "gauss4":
        return gaussian("gauss4", 4, -4.0)
    if name == "gauss10":
        return gaussian("gauss10", 10, -4.0)
    if name == "gauss50":
        return diagonal("gauss50", 50, -1.0, 0, accuracy=False)
    if name == "gauss50dense":
        return gaussian("gauss50dense", 50, -1.0, accuracy=False)
    if name == "funnel":
        return funnel()
    if name == "banana":
        return banana()
    return logreg(quick)


# --- implementations --------------------------------------------------------------------------


@dataclass
class Result:
    method: str
    ms_step: float = float("nan")
    particles: dict[int, np.ndarray] = field(default_factory=dict)  # budget -> (n, d) flat
    fit_s: float | None = None
    flow_loss: float | None = None
    own_ksd2: float | None = None
    run_s: float | None = None
    note: str = ""
    flow: Any = None  # the fitted flow (ours, flow), reused by "flow + linear"


def chunk_fn(step: Callable[[Any], Any], length: int = CHUNK) -> Callable[[Any], Any]:
    """Jitted ``length`` steps of ``step`` (state -> state) as one ``lax.scan``."""

    def run(state: Any) -> Any:
        return jax.lax.scan(lambda s, _: (step(s), None), state, length=length)[0]

    return jax.jit(run)


def time_chunk(chunk: Callable[[Any], Any], state: Any) -> float:
    """ms/step of a compiled chunk: best of ``REPEAT`` after one compiling call."""
    jax.block_until_ready(chunk(state))
    best = float("inf")
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        jax.block_until_ready(chunk(state))
        best = min(best, time.perf_counter() - t0)
    return 1e3 * best / CHUNK


def run_chunks(
    chunk: Callable[[Any], Any], state: Any, budgets: tuple[int, ...], flat: Callable
) -> dict[int, np.ndarray]:
    """Particles after each budget (budgets multiples of ``CHUNK``)."""
    out, done = {}, 0
    for b in budgets:
        while done < b:
            state = chunk(state)
            done += CHUNK
        out[b] = np.asarray(flat(state), np.float64)
    return out


def initial(target: Target, key: jax.Array) -> jax.Array:
    """Ours' default initial draw for ``key``: uniform on [-2, 2]^d with the second of
    ``split(key, 3)`` (``SVGD.init``: flow fit, initial particles, state key)."""
    u_key = jax.random.split(key, 3)[1]
    return jax.random.uniform(u_key, (N, target.dim), minval=-2.0, maxval=2.0)


def run_ours(
    target: Target,
    pre: Any,
    key: jax.Array,
    budgets: tuple[int, ...],
    flow_steps: int,
    linear: float = 0.0,
    label: str | None = None,
    noise: float | None = None,
) -> Result:
    import optax

    from numpyro_dsd import SVGD, NonFiniteStepError
    from numpyro_dsd.model import ModelLayout
    from numpyro_dsd.svgd import core

    flow_kwargs = {"num_steps": flow_steps} if pre == "flow" else None
    svgd = SVGD(
        target.model,
        optax.adagrad(STEP_SIZE),
        num_particles=N,
        preconditioner=pre,
        flow_kwargs=flow_kwargs,
        noise_step=noise,  # None: deterministic SVGD, the algorithm NumPyro and BlackJAX run
        linear_weight=linear,
    )
    res = Result(label or f"ours, {pre or 'plain'}")
    t0 = time.perf_counter()
    state, fit = jax.block_until_ready(svgd.init_with_fit(key, *target.args))
    if pre == "flow":
        res.fit_s = time.perf_counter() - t0
        res.flow_loss = float(np.mean(np.asarray(fit.losses)[-100:]))
    step = core.build_step(
        ModelLayout(svgd.model, target.args).log_prob,
        svgd.optim,
        svgd.kernel,
        svgd.preconditioner,
        linear_weight=linear,
        noise_step=noise,
    )
    res.ms_step = time_chunk(chunk_fn(lambda s: step(s)[0]), state)
    t0, done = time.perf_counter(), 0
    try:
        for b in budgets:
            result = svgd.run(key, b - done, *target.args, init_state=state, progress_bar=False)
            state, done = result.state, b
            res.particles[b] = np.asarray(result.particles, np.float64)
            res.own_ksd2 = float(result.ksd_squared[-1])
    except NonFiniteStepError as err:
        res.note = f"non-finite at step {int(err.result.state.step)}"
        for b in budgets:
            res.particles.setdefault(b, np.full((N, target.dim), np.nan))
    res.run_s = time.perf_counter() - t0
    res.flow = None if fit is None else fit.flow
    return res


def run_numpyro(target: Target, u0: jax.Array, budgets: tuple[int, ...]) -> Result:
    import optax
    from numpyro.contrib.einstein import SVGD, RBFKernel
    from numpyro.optim import optax_to_numpyro

    svgd = SVGD(
        target.model, optax_to_numpyro(optax.adagrad(STEP_SIZE)), RBFKernel(), num_stein_particles=N
    )
    state = svgd.init(jax.random.key(0), *target.args)
    sites = jax.vmap(target.unravel)(u0)
    params = {f"{k}_auto_loc": v for k, v in sites.items()}
    held = svgd.optim.get_params(state.optim_state)
    assert set(held) == set(params), (sorted(held), sorted(params))
    state = state._replace(optim_state=svgd.optim.init(params))
    chunk = chunk_fn(lambda s: svgd.update(s, *target.args)[0])

    def flat(s: Any) -> jax.Array:
        p = svgd.get_params(s)
        return jax.vmap(lambda i: _ravel({k: p[f"{k}_auto_loc"][i] for k in sites}))(jnp.arange(N))

    res = Result("NumPyro")
    res.ms_step = time_chunk(chunk, state)
    t0 = time.perf_counter()
    res.particles = run_chunks(chunk, state, budgets, flat)
    res.run_s = time.perf_counter() - t0
    return res


def _ravel(tree: dict[str, jax.Array]) -> jax.Array:
    from jax.flatten_util import ravel_pytree

    return ravel_pytree(tree)[0]


def run_blackjax(target: Target, u0: jax.Array, budgets: tuple[int, ...]) -> Result:
    import blackjax
    import optax
    from blackjax.vi.svgd import rbf_kernel, update_median_heuristic

    bj = blackjax.svgd(
        jax.grad(target.log_prob), optax.adagrad(STEP_SIZE), rbf_kernel, update_median_heuristic
    )
    state = update_median_heuristic(bj.init(u0))
    chunk = chunk_fn(bj.step)
    res = Result("BlackJAX")
    res.ms_step = time_chunk(chunk, state)
    t0 = time.perf_counter()
    res.particles = run_chunks(chunk, state, budgets, lambda s: s.particles)
    res.run_s = time.perf_counter() - t0
    return res


def run_whitened(target: Target, key: jax.Array, budgets: tuple[int, ...]) -> Result:
    """Ours plain on N(0, I) from z = u0, mapped back by x = mu + L z."""
    white = diagonal(f"whitened{target.dim}", target.dim, 0.0, 1)
    res = run_ours(white, None, key, budgets, 0)
    res.method = "ours, plain on the whitened target"
    res.particles = {b: target.mu + x @ target.chol.T for b, x in res.particles.items()}
    return res


def reference_row(target: Target, budgets: tuple[int, ...]) -> Result:
    idx = np.random.default_rng(4).choice(len(target.ref), N, replace=False)
    x = target.ref[idx]
    return Result("100 reference draws", particles={b: x for b in budgets})


# --- metrics ----------------------------------------------------------------------------------


def common_ksd(target: Target, x: np.ndarray) -> float:
    from numpyro_dsd import ksd

    if not np.all(np.isfinite(x)):
        return float("nan")
    xj = jnp.asarray(x, jnp.float32)
    scores = jax.jit(jax.vmap(jax.grad(target.log_prob)))(xj)
    return float(ksd(xj, scores, kernel=target.kernel))


def errors(target: Target, x: np.ndarray) -> dict[str, float]:
    """The target's error measures of particles ``x`` (n, d)."""
    if target.chol is not None:
        z = np.linalg.solve(target.chol, (x - target.mu).T).T
        cov = np.cov(z, rowvar=False).reshape(target.dim, target.dim)
        cov_err = np.linalg.norm(cov - np.eye(target.dim)) / np.sqrt(target.dim)
        return {"mean err": np.abs(z.mean(0)).max(), "cov err": cov_err}
    if target.name == "funnel":
        return {"mean(v)": x[:, 0].mean(), "sd(v)": x[:, 0].std(ddof=1)}
    if target.name == "banana":
        m, s = np.array([0.0, 2.0]), np.array([2.0, 3.0])
        return {
            "max \\|mean - truth\\| / sd": np.max(np.abs(x.mean(0) - m) / s),
            "max \\|sd/sd_true - 1\\|": np.abs(x.std(0, ddof=1) / s - 1).max(),
        }
    m, s = target.ref.mean(0), target.ref.std(0, ddof=1)
    ratio = x.std(0, ddof=1) / s
    return {
        "max \\|mean - NUTS\\| / sd": np.max(np.abs(x.mean(0) - m) / s),
        "sd / NUTS sd": (ratio.min(), ratio.max()),
    }


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, tuple):
        return " to ".join(_fmt(a) for a in v)
    v = float(v)
    if not np.isfinite(v):
        return "NaN"
    if v == 0 or 1e-3 <= abs(v) < 1e4:
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return f"{v:.2e}"


# --- driver -----------------------------------------------------------------------------------


def run_target(target: Target, args: argparse.Namespace) -> list[Result]:
    key = jax.random.key(0)
    u0 = initial(target, key)
    budgets = target_budgets(target, args)
    flow_steps = 500 if args.quick else 5000
    rows = [
        run_ours(target, None, key, budgets, flow_steps),
        run_ours(target, "constant", key, budgets, flow_steps),
        run_ours(target, "flow", key, budgets, flow_steps),
    ]
    flow = rows[-1].flow
    # SVGD's default: noisy steps in the flow's latent space (the flow fit reused), the finish
    rows.append(run_ours(target, flow, key, budgets, flow_steps, label="ours, default", noise=0.05))
    if target.accuracy:  # the linear kernel term (Liu & Wang 2018), the flow fit reused
        for pre, name in ((None, "plain"), ("constant", "constant"), (flow, "flow")):
            label = f"ours, {name} + linear"
            rows.append(run_ours(target, pre, key, budgets, flow_steps, 1.0, label))
    if target.chol is not None and target.accuracy:
        rows.append(run_whitened(target, key, budgets))
    rows += [run_numpyro(target, u0, budgets), run_blackjax(target, u0, budgets)]
    if target.accuracy:
        rows.append(reference_row(target, budgets))
    return rows


def target_budgets(target: Target, args: argparse.Namespace) -> tuple[int, ...]:
    """``--budgets``, plus ``--logreg-extra`` steps for the logistic regression."""
    if not target.accuracy:
        return ()
    extra = (args.logreg_extra,) if target.name == "logreg" and args.logreg_extra else ()
    return tuple(sorted(set(args.budgets + extra)))


def print_speed(all_rows: dict[str, list[Result]], targets: dict[str, Target]) -> None:
    print("Per-step time, ms (best of 3 jitted 100-step scans after compilation); flow fit s:")
    print()
    names = [r.method for r in next(iter(all_rows.values())) if "reference" not in r.method]
    names = [m for m in names if "whitened" not in m]
    print(
        "| target | d | " + " | ".join(names) + " | NumPyro / ours | BlackJAX / ours | flow fit s "
        "| flow loss |"
    )
    print("|---|---:|" + "---:|" * (len(names) + 4))
    for name, rows in all_rows.items():
        by = {r.method: r for r in rows}
        plain = by["ours, plain"].ms_step
        cells = " | ".join(f"{by[m].ms_step:.3g}" if m in by else "–" for m in names)
        flow = by["ours, flow"]
        print(
            f"| {name} | {targets[name].dim} | {cells} | "
            f"{by['NumPyro'].ms_step / plain:.1f}x | {by['BlackJAX'].ms_step / plain:.1f}x | "
            f"{flow.fit_s:.1f} | {_fmt(flow.flow_loss)} |"
        )
    print()


def print_accuracy(target: Target, rows: list[Result], budgets: tuple[int, ...]) -> dict:
    table: dict[tuple[str, int], dict[str, Any]] = {}
    for r in rows:
        for b in budgets:
            e = errors(target, r.particles[b])
            e["KSD (IMQ med, frozen)"] = common_ksd(target, r.particles[b])
            table[(r.method, b)] = e
    cols = list(next(iter(table.values())))
    print(f"### {target.name} (d = {target.dim})")
    print()
    head = " | ".join(f"{c} @ {b}" for c in cols for b in budgets)
    print(f"| method | {head} | own KSD² | run s | note |")
    print("|---|" + "---:|" * (len(cols) * len(budgets) + 2) + "---|")
    for r in rows:
        cells = " | ".join(_fmt(table[(r.method, b)][c]) for c in cols for b in budgets)
        print(f"| {r.method} | {cells} | {_fmt(r.own_ksd2)} | {_fmt(r.run_s)} | {r.note} |")
    print()
    return table


def acceptance(all_rows: dict, tables: dict, last: int) -> None:
    print(f"Acceptance (errors at {last} steps):")
    print()

    def line(ok: bool, text: str) -> None:
        print(f"- {'PASS' if ok else 'FAIL'}: {text}")

    if "gauss50" in all_rows:
        by = {r.method: r.ms_step for r in all_rows["gauss50"]}
        p, npy, bj = by["ours, plain"], by["NumPyro"], by["BlackJAX"]
        line(
            p <= 0.5 * npy,
            f"(a) d=50 ours {p:.3g} ms <= 0.5 x NumPyro {npy:.3g} ms (ratio {npy / p:.1f}x)",
        )
        line(p <= bj, f"(a) d=50 ours {p:.3g} ms <= BlackJAX {bj:.3g} ms (ratio {bj / p:.1f}x)")
        dft = by["ours, default"]
        line(dft <= bj, f"(a) d=50 ours' default step {dft:.3g} ms <= BlackJAX {bj:.3g} ms")
    if "gauss4" in tables:
        t = tables["gauss4"]
        f, pl, npy = (t[(m, last)] for m in ("ours, flow", "ours, plain", "NumPyro"))
        fc, pc, nc = f["cov err"], pl["cov err"], npy["cov err"]
        line(fc <= 0.5 * pc, f"(b) 4-d flow cov err {fc:.3g} <= 0.5 x plain {pc:.3g}")
        line(fc <= 0.5 * nc, f"(b) 4-d flow cov err {fc:.3g} <= 0.5 x NumPyro {nc:.3g}")
        line(f["mean err"] <= 0.1, f"(b) 4-d flow mean err {f['mean err']:.3g} <= 0.1")
    if "gauss10" in tables:
        t = tables["gauss10"]
        f, w = t[("ours, flow", last)], t[("ours, plain on the whitened target", last)]
        line(f["mean err"] <= 0.1, f"(c) 10-d flow mean err {f['mean err']:.3g} <= 0.1")
        line(
            f["cov err"] <= 1.25 * w["cov err"],
            f"(c) 10-d flow cov err {f['cov err']:.3g} <= 1.25 x whitened {w['cov err']:.3g}",
        )
    if "funnel" in tables:
        t = tables["funnel"]
        f, pl = t[("ours, flow", last)], t[("ours, plain", last)]
        fm, pm = abs(f["mean(v)"]), abs(pl["mean(v)"])
        fs, ps = abs(f["sd(v)"] - 3), abs(pl["sd(v)"] - 3)
        line(fm < pm, f"(d) funnel \\|mean(v)\\| flow {fm:.3g} < plain {pm:.3g}")
        line(fs < ps, f"(d) funnel \\|sd(v) - 3\\| flow {fs:.3g} < plain {ps:.3g}")
    if "logreg" in tables:
        t = tables["logreg"]
        col = "max \\|mean - NUTS\\| / sd"
        for b in sorted({b for _, b in t if b >= last}):
            methods = ("ours, plain", "ours, constant", "ours, flow", "NumPyro", "BlackJAX")
            linear = tuple(f"ours, {m} + linear" for m in ("plain", "constant", "flow"))
            for m in methods + linear:
                v = t[(m, b)][col]
                line(
                    v <= 0.1,
                    f"(e) logreg {m}, {b} steps: max standardised mean error {v:.3g} <= 0.1",
                )
    print()


def versions() -> str:
    pkgs = ("jax", "numpyro", "blackjax", "optax", "scikit-learn")
    return ", ".join(f"{p} {importlib.metadata.version(p)}" for p in pkgs)


def run(args: argparse.Namespace) -> None:
    t_start = time.perf_counter()
    all_rows, tables, targets = {}, {}, {}
    for name in args.targets:
        target = make_target(name, args.quick)
        targets[name] = target
        all_rows[name] = run_target(target, args)
        print(f"  done: {name} ({time.perf_counter() - t_start:.0f} s)", flush=True)
    print()
    print(f"# SVGD benchmark ({'quick' if args.quick else 'full'})")
    print()
    print(
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{CORES} cores, {jax.default_backend()}, float32; {versions()}; {N} particles, "
        f"optax.adagrad({STEP_SIZE}), budgets {args.budgets}; "
        f"total {time.perf_counter() - t_start:.0f} s."
    )
    print()
    print_speed(all_rows, targets)
    for name, rows in all_rows.items():
        if targets[name].accuracy:
            budgets = target_budgets(targets[name], args)
            tables[name] = print_accuracy(targets[name], rows, budgets)
    acceptance(all_rows, tables, args.budgets[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100/200 steps, short flow fits")
    parser.add_argument(
        "--targets", nargs="+", default=None, choices=TARGET_NAMES, help="default: all"
    )
    parser.add_argument(
        "--budgets",
        nargs="+",
        type=int,
        default=None,
        help="step budgets, multiples of 100 (default 200 1000)",
    )
    parser.add_argument(
        "--logreg-extra",
        type=int,
        default=None,
        help="a further budget for the logistic regression only (default 3000; 0 for none)",
    )
    args = parser.parse_args()
    if args.budgets is None:
        args.budgets = (100, 200) if args.quick else (200, 1000)
    if args.targets is None:
        args.targets = list(QUICK_TARGETS if args.quick else TARGET_NAMES)
    if args.logreg_extra is None:
        args.logreg_extra = 0 if args.quick else 3000
    args.budgets = tuple(sorted(args.budgets))
    if any(b % CHUNK for b in (*args.budgets, args.logreg_extra)):
        parser.error(f"budgets must be multiples of {CHUNK}")
    run(args)


if __name__ == "__main__":
    main()
