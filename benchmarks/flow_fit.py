"""Flow fitting: NumPyro's MAF layers (``fit_flow_to_samples``) against flowjax flows.

Decides whether flowjax (https://github.com/danielward27/flowjax) should supply the invertible
flows of :class:`numpyro_dsd.FlowDiffusion` ("measure before choosing the default"). On exact,
fixed-seed draws of two targets with a known differential entropy,

- ``banana`` (d = 2): :math:`x_1 \\sim N(0, 3^2)`, :math:`x_2 \\mid x_1 \\sim N(0.1 x_1^2 - 1, 1)`,
  :math:`H = \\tfrac12\\log(2\\pi e\\,9) + \\tfrac12\\log(2\\pi e)`;
- ``funnel`` (Neal, d = 5): :math:`v \\sim N(0, 1.5^2)`, :math:`x_i \\mid v \\sim N(0, e^{v})`,
  :math:`H = \\tfrac12\\log(2\\pi e\\,1.5^2) + 4(\\tfrac12\\log(2\\pi e) + E[v]/2)`, E[v] = 0,

it fits, on ``n_train`` draws:

- ``ours``: ``numpyro_dsd.flows.fit_flow_to_samples(x_train, progress_bar=False)``, otherwise
  defaults (2 MAF layers, hidden (16, 16), ELU, 2000 Adam steps of minibatch 256, step size
  1e-2 -> 1e-4 exponentially; the SVI loop runs as one ``lax.scan``);
- ``flowjax MAF, ours' arch``: ``flowjax.flows.masked_autoregressive_flow`` (affine
  transformer) with the same architecture as ours (2 layers, ``nn_width=16, nn_depth=2``, ELU);
- ``flowjax MAF``: the same with ``FLOWJAX_ARCH`` (8 layers, width 32, depth 1, ReLU);
- ``flowjax RQS coupling``: ``flowjax.flows.coupling_flow`` with ``FLOWJAX_ARCH`` and a
  ``RationalQuadraticSpline`` transformer (8 knots on [-5, 5]; identity outside).

The flowjax flows are trained by ``flowjax.train.fit_to_data`` on the *standardised* draws (the
per-coordinate mean/std standardisation that ours applies inside its flow, appended afterwards
as a fixed ``flowjax.bijections.Affine``), with the same optimiser as ours (Adam, 1e-2 -> 1e-4
over 2000 steps), batch 256, ``val_prop=0.1`` (flowjax holds out 10% of the draws), 143 epochs
of 14 batches = 2002 steps, no early stopping, ``return_best=False`` (the last iterate, as ours),
and one ``MaximumLikelihoodLoss`` instance for all calls (with the default ``loss_fn=None`` every
call builds a new loss object and recompiles).

Reported per flow and target:

- ``compile s``: ours, a 50-step call of ``fit_flow_to_samples`` less its 50 steps
  (extrapolated from the full call; each call traces and compiles its SVI scan anew); flowjax, a
  1-epoch call of ``fit_to_data`` (its jitted step is then cached across calls);
- ``train s``: ours, the full call less that compile time; flowjax, the full call after the
  1-epoch warm-up. Both as wall seconds (process CPU seconds);
- held-out mean negative log-likelihood per draw on ``n_test`` fresh draws, the true entropy
  ``H`` and ``NLL - H`` (an estimate of KL(p || q)); ``KL +- se`` is the lower-variance paired
  estimate ``mean(log p - log q)`` with its standard error;
- the cost of :meth:`FlowDiffusion.latent` on 20000 fresh draws with their exact scores, both
  ways: the generator route (``FlowDiffusion.from_generator(G)``, one VJP of :math:`G`) and the
  Jacobian route (``FlowDiffusion(T)``, ``jacfwd`` of :math:`T` and a solve). Ours' default
  (``fit.flow.diffusion()``) is the Jacobian route of its MAF normaliser :math:`T`; its generator
  is NumPyro's IAF inverse. A flowjax ``Transformed(base, bijection)`` maps latent to data, so
  ``G = Chain([flow.bijection, Affine(loc, scale)])`` and ``T = Invert(G)``; its default is
  the generator route (``from_generator``). Time = second call (steady state), compile = first
  call - second call; ``agree`` is the largest difference of the two routes' latent scores
  relative to the largest score, ``|s_z|`` the median / 99% / max latent score norm;
- on the banana, the diffusion-KSD separation ``ksd(biased) / ksd(exact)``: the ``n_test``
  exact draws against the same draws with :math:`x_2` shifted by +0.3, scores of the true
  banana at the points, ``numpyro_dsd.ksd(x, scores, kernel=IMQ(), diffusion=...)`` (IMQ kernel
  with unit bandwidth, V-statistic)
  through each flow's default route, and the plain (Langevin) KSD for reference.

Float32 throughout. Timings are wall-clock on a shared machine and noisy.

Usage::

    .venv/bin/python benchmarks/flow_fit.py            # full run (3-5 minutes on 2 cores)
    .venv/bin/python benchmarks/flow_fit.py --quick    # smaller data, 300 steps: a smoke test
    .venv/bin/python benchmarks/flow_fit.py --targets banana --flows ours rqs
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import math
import os
import platform
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

CORES = len(os.sched_getaffinity(0))
LOG_2PI_E = math.log(2 * math.pi * math.e)
BATCH = 256
OURS_SHORT = 50
VAL_PROP = 0.1
SHIFT = 0.3
FLOWJAX_ARCH = dict(flow_layers=8, nn_width=32, nn_depth=1)  # flowjax defaults: 8, 50, 1
OURS_ARCH = dict(flow_layers=2, nn_width=16, nn_depth=2, nn_activation=jax.nn.elu)
RQS = dict(knots=8, interval=5.0)


# --- targets ----------------------------------------------------------------------------------


def _normal_logpdf(x: jax.Array, loc: jax.Array | float, scale: jax.Array | float) -> jax.Array:
    return -0.5 * ((x - loc) / scale) ** 2 - jnp.log(scale) - 0.5 * math.log(2 * math.pi)


def banana_sample(key: jax.Array, n: int) -> jax.Array:
    k1, k2 = jax.random.split(key)
    x1 = 3.0 * jax.random.normal(k1, (n,))
    x2 = 0.1 * x1**2 - 1.0 + jax.random.normal(k2, (n,))
    return jnp.stack([x1, x2], axis=1)


def banana_log_p(x: jax.Array) -> jax.Array:
    """Normalised log density of one point (2,)."""
    return _normal_logpdf(x[0], 0.0, 3.0) + _normal_logpdf(x[1], 0.1 * x[0] ** 2 - 1.0, 1.0)


def funnel_sample(key: jax.Array, n: int, d: int = 5) -> jax.Array:
    k1, k2 = jax.random.split(key)
    v = 1.5 * jax.random.normal(k1, (n, 1))
    rest = jnp.exp(v / 2) * jax.random.normal(k2, (n, d - 1))
    return jnp.concatenate([v, rest], axis=1)


def funnel_log_p(x: jax.Array) -> jax.Array:
    """Normalised log density of one point (d,)."""
    v = x[0]
    return _normal_logpdf(v, 0.0, 1.5) + jnp.sum(_normal_logpdf(x[1:], 0.0, jnp.exp(v / 2)))


@dataclass(frozen=True)
class Target:
    name: str
    dim: int
    sample: Callable[[jax.Array, int], jax.Array]
    log_p: Callable[[jax.Array], jax.Array]
    entropy: float
    seed: int


TARGETS = (
    Target(
        "banana",
        2,
        banana_sample,
        banana_log_p,
        0.5 * math.log(2 * math.pi * math.e * 9) + 0.5 * LOG_2PI_E,
        0,
    ),
    Target(
        "funnel",
        5,
        funnel_sample,
        funnel_log_p,
        0.5 * math.log(2 * math.pi * math.e * 1.5**2) + 4 * (0.5 * LOG_2PI_E + 0.0 / 2),
        10,
    ),
)


# --- fitted flows -----------------------------------------------------------------------------


@dataclass
class Fitted:
    name: str
    n_params: int
    compile_s: tuple[float, float]  # (wall, process CPU)
    train_s: tuple[float, float]
    total_s: tuple[float, float]  # what one fit costs from a cold start
    log_q: Callable[[jax.Array], jax.Array]  # (n, d) -> (n,)
    routes: dict[str, Any]  # "generator" / "jacobian" -> FlowDiffusion
    default_route: str


def _timed(fn: Callable[[], Any]) -> tuple[Any, np.ndarray]:
    """``fn()`` (blocked until ready) and its (wall, process CPU) seconds."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn())
    return out, np.array([time.perf_counter() - t0, time.process_time() - c0])


def _n_params(tree: Any) -> int:
    import equinox as eqx

    leaves = jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_inexact_array))
    return int(sum(np.size(leaf) for leaf in leaves))


def fit_ours(x: jax.Array, steps: int) -> Fitted:
    from numpyro_dsd import FlowDiffusion
    from numpyro_dsd.flows.fitting import fit_flow_to_samples

    short = min(OURS_SHORT, steps // 2)
    _, short_s = _timed(lambda: fit_flow_to_samples(x, num_steps=short, progress_bar=False).losses)
    fit, total_s = _timed(lambda: fit_flow_to_samples(x, num_steps=steps, progress_bar=False))
    per_step = np.maximum(total_s - short_s, 0.0) / (steps - short)
    compile_s = np.maximum(short_s - short * per_step, 0.0)
    flow = fit.flow
    return Fitted(
        name="ours: NumPyro MAF (fit_flow_to_samples)",
        n_params=_n_params(flow.params),
        compile_s=tuple(compile_s),
        train_s=tuple(total_s - compile_s),
        total_s=tuple(total_s),
        log_q=flow.log_prob,
        routes={
            "jacobian": flow.diffusion(),
            "generator": FlowDiffusion.from_generator(flow.generator()),
        },
        default_route="jacobian",
    )


def _optimizer(steps: int) -> Any:
    import optax

    return optax.adam(optax.exponential_decay(1e-2, steps, 1e-2, end_value=1e-4))


def fit_flowjax(
    x: jax.Array, steps: int, kind: str, key: int, arch: dict[str, Any] | None = None
) -> Fitted:
    from flowjax.bijections import Affine, Chain, Invert, RationalQuadraticSpline
    from flowjax.distributions import Normal
    from flowjax.flows import coupling_flow, masked_autoregressive_flow
    from flowjax.train import fit_to_data
    from flowjax.train.losses import MaximumLikelihoodLoss

    from numpyro_dsd import FlowDiffusion

    n, d = x.shape
    loc, scale = jnp.mean(x, axis=0), jnp.std(x, axis=0)
    xs = (x - loc) / scale
    base = Normal(jnp.zeros(d))
    if arch is None:
        arch = OURS_ARCH if kind == "maf_small" else FLOWJAX_ARCH
    if kind in ("maf", "maf_small"):
        name = "flowjax MAF (affine)" if kind == "maf" else "flowjax MAF, ours' arch"
        flow = masked_autoregressive_flow(jax.random.key(key), base_dist=base, **arch)
    else:
        name = "flowjax RQS coupling"
        flow = coupling_flow(
            jax.random.key(key),
            base_dist=base,
            transformer=RationalQuadraticSpline(**RQS),
            **arch,
        )
    per_epoch = (n - round(VAL_PROP * n)) // BATCH
    epochs = max(1, math.ceil(steps / per_epoch))
    opt = _optimizer(steps)
    options = dict(
        loss_fn=MaximumLikelihoodLoss(),  # one instance: a fresh default recompiles every call
        optimizer=opt,
        batch_size=BATCH,
        val_prop=VAL_PROP,
        max_patience=epochs + 1,
        return_best=False,
        show_progress=False,
    )
    fkey = jax.random.key(key + 1)
    _, compile_s = _timed(lambda: fit_to_data(fkey, flow, xs, max_epochs=1, **options)[0])
    (flow, _), train_s = _timed(lambda: fit_to_data(fkey, flow, xs, max_epochs=epochs, **options))
    log_scale = jnp.sum(jnp.log(scale))
    G = Chain([flow.bijection, Affine(loc, scale)])  # latent -> standardised -> data
    return Fitted(
        name=f"{name} [{epochs * per_epoch} steps]",
        n_params=_n_params(flow),
        compile_s=tuple(compile_s),
        train_s=tuple(train_s),
        total_s=tuple(compile_s + train_s),
        log_q=lambda y: flow.log_prob((y - loc) / scale) - log_scale,
        routes={
            "generator": FlowDiffusion.from_generator(G),
            "jacobian": FlowDiffusion(Invert(G)),
        },
        default_route="generator",
    )


# --- measurements -----------------------------------------------------------------------------


def density_row(fitted: Fitted, target: Target, x_test: jax.Array) -> dict[str, Any]:
    log_q = np.asarray(fitted.log_q(x_test), dtype=np.float64)
    log_p = np.asarray(jax.jit(jax.vmap(target.log_p))(x_test), dtype=np.float64)
    nll = -log_q.mean()
    diff = log_p - log_q
    return dict(
        nll=nll,
        gap=nll - target.entropy,
        kl=diff.mean(),
        kl_se=diff.std(ddof=1) / math.sqrt(diff.size),
        finite=bool(np.all(np.isfinite(log_q))),
    )


def latent_timing(diffusion: Any, x: jax.Array, s: jax.Array) -> dict[str, Any]:
    from numpyro_dsd.flows.bijections import NotInvertibleError

    try:
        _, first = _timed(lambda: diffusion.latent(x, s))
        (z, s_z), second = _timed(lambda: diffusion.latent(x, s))
    except Exception as err:  # noqa: BLE001 - report, do not stop the benchmark
        msg = str(err)
        rows = re.search(r"(\d+) of (\d+) (rows|draws)", msg)
        where = f" at {rows.group(1)} of {rows.group(2)} draws" if rows else ""
        if "NaN or inf" in msg:
            return dict(error=f"NaN/inf latent score{where}")
        if isinstance(err, NotInvertibleError):
            return dict(error=f"round trip G(G^-1(x)) != x{where}")
        return dict(error=f"{type(err).__name__}: {msg[:80]}")
    norm = np.linalg.norm(np.asarray(s_z), axis=1)
    return dict(
        run=second[0],
        compile=max(first[0] - second[0], 0.0),
        z=z,
        s_z=s_z,
        s_z_size=(np.median(norm), np.quantile(norm, 0.99), norm.max()),
    )


def ksd_ratio(diffusion: Any, target: Target, x_test: jax.Array) -> float:
    from numpyro_dsd import IMQ, ksd

    score = jax.jit(jax.vmap(jax.grad(target.log_p)))
    biased = x_test.at[:, 1].add(SHIFT)
    exact = ksd(x_test, score(x_test), kernel=IMQ(), diffusion=diffusion)
    shifted = ksd(biased, score(biased), kernel=IMQ(), diffusion=diffusion)
    return float(shifted / exact)


# --- report -----------------------------------------------------------------------------------


def _fmt_s(t: tuple[float, float]) -> str:
    return f"{t[0]:.1f} ({t[1]:.1f})"


def _fmt_latent(t: dict[str, Any]) -> str:
    if "error" in t:
        return f"fails: {t['error']}"
    return f"{t['run']:.2f} ({t['compile']:.1f})"


def warm_up() -> None:
    """First use of both libraries (imports, JAX's own start-up) on tiny data, not timed."""
    from numpyro_dsd.flows.fitting import fit_flow_to_samples

    x = jax.random.normal(jax.random.key(0), (300, 2))
    jax.block_until_ready(fit_flow_to_samples(x, num_steps=2, progress_bar=False).losses)
    fit_flowjax(x, 2, "maf", key=0, arch=dict(flow_layers=1, nn_width=4, nn_depth=1))


def run(args: argparse.Namespace) -> None:
    n_train, n_test, n_latent, steps = (
        (1000, 1000, 2000, 300) if args.quick else (4000, 4000, 20000, 2000)
    )
    kinds = [k for k in ("ours", "maf_small", "maf", "rqs") if k in args.flows]
    fit_rows, lat_rows = [], []
    ksd_rows: list[tuple[str, float]] = []
    t_start = time.perf_counter()
    warm_up()
    for target in [t for t in TARGETS if t.name in args.targets]:
        keys = jax.random.split(jax.random.key(target.seed), 3)
        x_train = target.sample(keys[0], n_train)
        x_test = target.sample(keys[1], n_test)
        x_lat = target.sample(keys[2], n_latent)
        s_lat = jax.jit(jax.vmap(jax.grad(target.log_p)))(x_lat)
        if target.name == "banana":
            ksd_rows.append(("plain (Identity)", ksd_ratio(None, target, x_test)))
        for kind in kinds:
            if kind == "ours":
                fitted = fit_ours(x_train, steps)
            else:
                fitted = fit_flowjax(x_train, steps, kind, key=target.seed + 100)
            dens = density_row(fitted, target, x_test)
            fit_rows.append((target, fitted, dens))
            gen = latent_timing(fitted.routes["generator"], x_lat, s_lat)
            jac = latent_timing(fitted.routes["jacobian"], x_lat, s_lat)
            agree = float("nan")
            if "error" not in gen and "error" not in jac:
                num = jnp.max(jnp.abs(gen["s_z"] - jac["s_z"]))
                agree = float(num / jnp.max(jnp.abs(jac["s_z"])))
            lat_rows.append((target, fitted, gen, jac, agree))
            if target.name == "banana":
                route = fitted.default_route
                try:
                    ratio = ksd_ratio(fitted.routes[route], target, x_test)
                except Exception as err:  # noqa: BLE001 - report, do not stop the benchmark
                    print(f"  ksd failed: {type(err).__name__}: {err}")
                    ratio = float("nan")
                ksd_rows.append((f"{fitted.name}, {route} route", ratio))
            elapsed = time.perf_counter() - t_start
            print(f"  done: {target.name} / {fitted.name} ({elapsed:.0f} s)", flush=True)
    total = time.perf_counter() - t_start

    versions = ", ".join(
        f"{p} {importlib.metadata.version(p)}"
        for p in ("jax", "numpyro", "flowjax", "equinox", "paramax", "optax")
    )
    print()
    print(f"# Flow fitting benchmark ({'quick' if args.quick else 'full'})")
    print()
    print(
        f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {platform.machine()}, {CORES} cores, "
        f"load average at the end {os.getloadavg()[0]:.1f}; {versions}; float32; "
        f"n_train={n_train}, n_test={n_test}, {steps} steps of batch {BATCH}; flowjax arch "
        f"{FLOWJAX_ARCH} (ours' arch: 2 layers, nn_width 16, nn_depth 2, elu), RQS {RQS}; "
        f"total {total:.0f} s."
    )
    print()
    print(
        "Fit: seconds as wall (process CPU); total = compile + train (ours: the full call; its "
        "split is extrapolated from a 50-step call and noisy); KL +- se = mean(log p - log q) "
        "on the test draws."
    )
    print()
    print(
        "| target | flow | params | compile s | train s | total s | test NLL | H | NLL - H "
        "| KL +- se |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for target, fitted, dens in fit_rows:
        bad = "" if dens["finite"] else " (non-finite log q!)"
        print(
            f"| {target.name} | {fitted.name} | {fitted.n_params} | {_fmt_s(fitted.compile_s)} | "
            f"{_fmt_s(fitted.train_s)} | {_fmt_s(fitted.total_s)} | {dens['nll']:.4f}{bad} | "
            f"{target.entropy:.4f} | "
            f"{dens['gap']:.4f} | {dens['kl']:.4f} +- {dens['kl_se']:.4f} |"
        )
    print()
    print(
        f"FlowDiffusion.latent on {n_latent} draws with exact scores: steady-state wall seconds "
        "(compile seconds); |s_z| = median / 99% / max of the latent score norms of the default "
        "route (ours: jacobian, flowjax: generator); agree = max |s_z(generator) - "
        "s_z(jacobian)| / max |s_z|."
    )
    print()
    print("| target | flow | generator route s | jacobian route s | agree | \\|s_z\\| |")
    print("|---|---|---:|---:|---:|---:|")
    for target, fitted, gen, jac, agree in lat_rows:
        default = gen if fitted.default_route == "generator" else jac
        size = "/".join(f"{v:.3g}" for v in default["s_z_size"]) if "s_z_size" in default else "-"
        print(
            f"| {target.name} | {fitted.name} | {_fmt_latent(gen)} | {_fmt_latent(jac)} | "
            f"{agree:.1e} | {size} |"
        )
    if ksd_rows:
        print()
        print(
            f"Banana, {n_test} exact draws vs the same draws with x2 + {SHIFT} (true scores), "
            "IMQ kernel, V-statistic:"
        )
        print()
        print("| diffusion | ksd(biased) / ksd(exact) |")
        print("|---|---:|")
        for name, ratio in ksd_rows:
            print(f"| {name} | {ratio:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small data, 300 steps")
    parser.add_argument("--targets", nargs="+", default=["banana", "funnel"])
    parser.add_argument(
        "--flows", nargs="+", default=["ours", "maf_small", "maf", "rqs"], help="which to fit"
    )
    run(parser.parse_args())


if __name__ == "__main__":
    main()
