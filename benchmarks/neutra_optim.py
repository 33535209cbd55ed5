"""Step-size schedules for ``fit_flow`` (NeuTra SVI): the KL of the fitted flow to the posterior.

The test models have no observations and normalised priors, so the log evidence is 0 and the
negative ELBO *is* KL(q || p); it is estimated with 4000 draws of the fitted flow. Rows: Adam
with a constant step size (NumPyro's usual choice) and the package default, Adam with a step
size decaying from 1e-2 to 1e-4 over 2000 steps
(:func:`numpyro_dsd.flows.fitting.default_optim`), with 1, 4 and 8 ELBO particles per step.
Wall times include compilation. Run::

    .venv/bin/python benchmarks/neutra_optim.py
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from numpyro_dsd.flows import FittedFlow, fit_flow
from numpyro_dsd.model.layout import ModelLayout


def banana() -> None:
    """x1 ~ N(0, 3^2), x2 | x1 ~ N(0.1 x1^2 - 1, 1)."""
    x1 = numpyro.sample("x1", dist.Normal(0, 3))
    numpyro.sample("x2", dist.Normal(0.1 * x1**2 - 1, 1))


def funnel(d: int = 5) -> None:
    """Neal's funnel: v ~ N(0, 1.5^2), x_i | v ~ N(0, e^v), i < d."""
    v = numpyro.sample("v", dist.Normal(0, 1.5))
    numpyro.sample("x", dist.Normal(0, jnp.exp(v / 2)).expand([d - 1]))


def kl(model: object, flow: FittedFlow) -> float:
    """KL(q || p) = E_q[log q(x) - log p(x)] with 4000 draws of the fitted flow q (these
    evidence-free models have log Z = 0): x = G(eps), log q(x) = log N(eps) - log|det dG|."""
    log_p = ModelLayout(model).log_prob
    G = flow.generator()
    eps = jax.random.normal(jax.random.key(9), (4000, flow.spec.dim))
    x = G(eps)
    log_normal = -0.5 * jnp.sum(eps**2, -1) - 0.5 * flow.spec.dim * jnp.log(2 * jnp.pi)
    log_q = log_normal - G.log_abs_det_jacobian(eps, x)
    return float(jnp.mean(log_q - jax.vmap(log_p)(x)))


def main() -> None:
    rows = [
        ("Adam(5e-3), 1 particle", numpyro.optim.Adam(5e-3), 1),
        ("default schedule, 1 particle", None, 1),
        ("default schedule, 4 particles (default)", None, 4),
        ("default schedule, 8 particles", None, 8),
    ]
    print("| target | optimiser | steps | time (s) | KL(q, p) |")
    print("|---|---|---|---|---|")
    for name, model in [("banana 2-d", banana), ("funnel 5-d", funnel)]:
        for label, optim, particles in rows:
            start = time.perf_counter()
            fit = fit_flow(model, optim=optim, num_particles=particles, progress_bar=False)
            seconds = time.perf_counter() - start
            print(f"| {name} | {label} | 2000 | {seconds:.1f} | {kl(model, fit.flow):.3f} |")


if __name__ == "__main__":
    main()
