"""Variance collapse: dimension-averaged marginal variance (DAMV) of SVGD particles, one run.

Targets (truth: DAMV 1): ``gauss``, N(0, I_d); ``t5``, the product of Student-t(5) marginals
scaled to unit variance (heavy tails: the scores decay like 1/x). 100 particles, from uniform
draws on [-2, 2]^d, d in ``--dims``; DAMV is the mean over coordinates of the particles' variance
(for NumPyro's mixture: the mixture's variance, mean component variance plus the variance of
the component means), reported after each of ``--steps``.

Methods, all with the RBF kernel and the median heuristic:

- ours: the default ``SVGD(model, optax.adagrad(0.1))`` (a NeuTra flow fitted on the target,
  noisy SVGD with ``noise_step=0.05`` in its latent space, then 100 deterministic finish steps
  towards the Stein moment equations, ``finish_moments="auto"``: jointly over the latent
  coordinates whose tails look Gaussian, per coordinate on the rest), and with
  ``finish_moments="full"`` and ``"diagonal"``; the default without a preconditioner (the
  targets are whitened); noisy SVGD alone (``optim=None``); and deterministic SVGD, plain
  (``preconditioner=None, noise_step=None, linear_weight=0``) and with ``linear_weight=1``;
- NumPyro: ``numpyro.contrib.einstein.SVGD`` (plain, Delta guide) and ``SteinVI`` with an
  ``AutoNormal`` guide (its mixture method: every Stein particle is a Gaussian component), both
  with ``optax.adagrad(0.1)``; the mixture takes about 0.65 s per step at d = 5 on 2 cores, so
  it runs ``--mixture-steps`` steps (default 200) and its cells hold that value (marked †);
- BlackJAX: ``blackjax.svgd`` with ``optax.adagrad(0.1)``.

Also printed: ms per step (the whole run over its steps, compilation excluded as far as the
library allows: one short warm-up run first, and the default's flow fit; ours' finish, 100
steps per reported value, is outside the count of steps but inside the time).

Run: ``.venv/bin/python benchmarks/svgd_collapse.py [--dims 20 50 100] [--steps 2000 10000]``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Callable

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax

N = 100
STEP = 0.1  # adagrad
NU = 5.0
PLAIN = {"preconditioner": None, "noise_step": None, "linear_weight": 0.0}


def model_for(target: str, d: int) -> Callable[[], None]:
    def gauss() -> None:
        numpyro.sample("x", dist.Normal(0.0, 1.0).expand([d]).to_event(1))

    def t5() -> None:
        scale = np.sqrt((NU - 2) / NU)
        numpyro.sample("x", dist.StudentT(NU, 0.0, scale).expand([d]).to_event(1))

    return {"gauss": gauss, "t5": t5}[target]


def damv(x: np.ndarray) -> float:
    return float(np.mean(np.var(np.asarray(x, np.float64), axis=0, ddof=1)))


def ours(model: Callable, steps: list[int], optim=STEP, **kw) -> tuple[list[float], float]:
    """DAMV of ``SVGD(model, adagrad(optim) or None, num_particles=N, **kw)`` at ``steps``."""
    from numpyro_dsd import SVGD

    svgd = SVGD(model, optim and optax.adagrad(optim), num_particles=N, chunk_size=500, **kw)
    state = svgd.init(jax.random.key(0))  # the default fits its flow here
    svgd.run(jax.random.key(1), 10, progress_bar=False, init_state=state)  # compile
    out, done, t = [], 0, 0.0
    for s in steps:
        t0 = time.perf_counter()
        r = svgd.run(jax.random.key(0), s - done, progress_bar=False, init_state=state)
        t += time.perf_counter() - t0
        state, done = r.state, s
        out.append(damv(r.particles))
    return out, 1e3 * t / steps[-1]


CHUNK = 100  # steps per compiled call (the step counts are multiples of it)
MIXTURE_STEPS = 200


def run_to(chunk: Callable, state, steps: list[int]) -> tuple[list, float]:
    """``state`` after each step count (``chunk(state, CHUNK)`` repeatedly, compiled once
    before timing), and the seconds spent."""
    chunk = jax.jit(chunk, static_argnums=1)
    jax.block_until_ready(chunk(state, CHUNK))
    states, done, t = [], 0, 0.0
    for s in steps:
        t0 = time.perf_counter()
        while done < s:
            state = jax.block_until_ready(chunk(state, CHUNK))
            done += CHUNK
        t += time.perf_counter() - t0
        states.append(state)
    return states, t


def numpyro_steinvi(model: Callable, steps: list[int], mixture: bool) -> tuple[list[float], float]:
    if mixture:
        steps = [MIXTURE_STEPS]
    from numpyro.contrib.einstein import SVGD, RBFKernel, SteinVI
    from numpyro.infer.autoguide import AutoNormal
    from numpyro.optim import optax_to_numpyro

    optim = optax_to_numpyro(optax.adagrad(STEP))
    if mixture:
        svi = SteinVI(model, AutoNormal(model), optim, RBFKernel(), num_stein_particles=N)
    else:
        svi = SVGD(model, optim, RBFKernel(), num_stein_particles=N)
    state = svi.init(jax.random.key(0))

    def chunk(s, length):
        return jax.lax.scan(lambda c, _: (svi.update(c)[0], None), s, length=length)[0]

    states, t = run_to(chunk, state, steps)
    out = []
    for state in states:
        p = svi.get_params(state)
        loc = np.asarray(p["x_auto_loc"], np.float64)
        if mixture:
            sc = np.asarray(p["x_auto_scale"], np.float64)
            out.append(float(np.mean(np.mean(sc**2, axis=0) + np.var(loc, axis=0))))
        else:
            out.append(damv(loc))
    return out, 1e3 * t / steps[-1]


def blackjax_svgd(model: Callable, d: int, steps: list[int]) -> tuple[list[float], float]:
    import blackjax
    from blackjax.vi.svgd import rbf_kernel, update_median_heuristic
    from numpyro.infer.util import potential_energy

    def log_prob(x: jax.Array) -> jax.Array:
        return -potential_energy(model, (), {}, {"x": x})

    bj = blackjax.svgd(jax.grad(log_prob), optax.adagrad(STEP), rbf_kernel, update_median_heuristic)
    u0 = jax.random.uniform(jax.random.key(0), (N, d), minval=-2.0, maxval=2.0)
    state = update_median_heuristic(bj.init(u0))

    def chunk(s, length):
        return jax.lax.scan(lambda c, _: (bj.step(c), None), s, length=length)[0]

    states, t = run_to(chunk, state, steps)
    return [damv(s.particles) for s in states], 1e3 * t / steps[-1]


METHODS = {
    "ours, default": lambda m, d, st: ours(m, st),
    "ours, default, full finish": lambda m, d, st: ours(m, st, finish_moments="full"),
    "ours, default, diagonal finish": lambda m, d, st: ours(m, st, finish_moments="diagonal"),
    "ours, noisy + finish, no preconditioner": lambda m, d, st: ours(m, st, preconditioner=None),
    "ours, noisy, no finish": lambda m, d, st: ours(m, st, optim=None, preconditioner=None),
    "ours, plain": lambda m, d, st: ours(m, st, **PLAIN),
    "ours, linear_weight=1": lambda m, d, st: ours(m, st, **{**PLAIN, "linear_weight": 1.0}),
    "NumPyro SVGD": lambda m, d, st: numpyro_steinvi(m, st, mixture=False),
    "NumPyro SteinVI, AutoNormal mixture": lambda m, d, st: numpyro_steinvi(m, st, mixture=True),
    "BlackJAX svgd": lambda m, d, st: blackjax_svgd(m, d, st),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="*", default=[20, 50, 100])
    parser.add_argument("--steps", type=int, nargs="*", default=[2000, 10000])
    parser.add_argument("--targets", nargs="*", default=["gauss", "t5"])
    parser.add_argument("--only", nargs="*", default=list(METHODS), help="method names")
    parser.add_argument("--mixture-steps", type=int, default=MIXTURE_STEPS)
    args = parser.parse_args()
    globals()["MIXTURE_STEPS"] = args.mixture_steps
    print(f"# {' '.join(sys.argv)}  ({datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC)")
    cols = " | ".join(f"DAMV at {s}" for s in args.steps)
    print(f"| target | d | method | {cols} | ms/step |")
    print("|---|---:|---|" + "---:|" * (len(args.steps) + 1))
    for target in args.targets:
        for d in args.dims:
            model = model_for(target, d)
            for name in args.only:
                try:
                    values, ms = METHODS[name](model, d, args.steps)
                    if len(values) < len(args.steps):  # the mixture: one value, at its steps
                        values = values * len(args.steps)
                        cells = " | ".join(f"{v:.3g} †" for v in values)
                    else:
                        cells = " | ".join(f"{v:.3g}" for v in values)
                except Exception as err:  # a failing peer is a result, not a crash
                    cells = " | ".join(["error"] * len(args.steps))
                    ms = float("nan")
                    print(f"<!-- {name}: {type(err).__name__}: {str(err)[:200]} -->")
                print(f"| {target} | {d} | {name} | {cells} | {ms:.2f} |", flush=True)


if __name__ == "__main__":
    main()
