"""Cost of the flow diffusion KSD against a plain KSD on the same points (the goal: at most 3x).

``FlowDiffusion`` maps the points to latent space and forms latent scores (docs/math.md §3.8), then
runs the plain Stein kernel there. This script times, for the same (n, d) and dtype, after one
warm-up call (compilation) and as the best of ``--repeats`` calls:

- ``plain``: ``ksd(x, s, kernel=IMQ())`` (the unit-bandwidth IMQ, as in the recorded numbers;
  every call below uses it);
- ``MAF (T, Jacobian route)``: a two-layer masked autoregressive flow of
  :func:`numpyro_dsd.fit_flow_to_samples` (the data-to-latent map is one network pass; the
  latent score is a ``jacfwd`` and a d x d solve per point);
- ``IAF (generator route)``: the same layers as a NeuTra/``AutoIAFNormal`` generator (the latent
  point needs the IAF's sequential inverse, d network passes per layer; the score one VJP);
- ``affine``: ``LowerCholeskyAffine`` as a generator.

Flow fitting is excluded (the flows have their initial parameters; cost does not depend on the
values). Run::

    .venv/bin/python benchmarks/flow_diffusion_speed.py            # n = 20000, d = 10
    .venv/bin/python benchmarks/flow_diffusion_speed.py --quick    # n = 5000
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ksd_speed import best_time, environment, make_data  # noqa: E402

TARGET_RATIO = 3.0


def flows(x: np.ndarray) -> dict[str, object]:
    """The flow diffusions to time, built once (their jitted latent maps are reused)."""
    import jax.numpy as jnp
    from numpyro.distributions.transforms import LowerCholeskyAffine

    from numpyro_dsd import FlowDiffusion
    from numpyro_dsd.flows.fitting import fit_flow_to_samples

    maf = fit_flow_to_samples(x[:1000], num_steps=1, progress_bar=False).flow
    iaf = maf._replace(spec=maf.spec._replace(direction="generator"))
    d = x.shape[1]
    chol = jnp.eye(d) + 0.1 * jnp.tril(jnp.ones((d, d)), -1)
    return {
        "MAF (T, Jacobian route)": maf.diffusion(),
        "IAF (generator route)": iaf.diffusion(),
        "affine (generator)": FlowDiffusion.from_generator(LowerCholeskyAffine(jnp.zeros(d), chol)),
    }


def timings(n: int, d: int, dtype: str, repeats: int) -> list[tuple[str, float, float]]:
    """(label, best seconds, latent-map seconds) for plain KSD and each flow."""
    import jax

    jax.config.update("jax_enable_x64", dtype == "float64")
    from numpyro_dsd import IMQ, ksd

    x, s = (a.astype(dtype) for a in make_data(n, d, seed=0))

    def run(fn: Callable[[], object]) -> float:
        fn()  # warm-up: compilation
        return best_time(lambda: jax.block_until_ready(fn()), repeats, budget_s=120.0)[0]

    kernel = IMQ()
    rows = [("plain", run(lambda: ksd(x, s, kernel=kernel)), 0.0)]
    for label, diffusion in flows(x).items():
        total = run(lambda diffusion=diffusion: ksd(x, s, kernel=kernel, diffusion=diffusion))
        latent = run(lambda diffusion=diffusion: diffusion.latent(x, s))
        rows.append((label, total, latent))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 5000 instead of 20000")
    parser.add_argument("--d", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n = 5000 if args.quick else 20000
    print("\n".join(f"- {line}" for line in environment()))
    for dtype in ("float64", "float32"):
        rows = timings(n, args.d, dtype, args.repeats)
        plain = rows[0][1]
        print(f"\nn = {n}, d = {args.d}, {dtype}\n")
        print("| diffusion | KSD time (s) | of which latent map (s) | ratio to plain | <= 3x |")
        print("|---|---|---|---|---|")
        for label, total, latent in rows:
            ok = "yes" if total <= TARGET_RATIO * plain else "NO"
            lat = f"{latent:.3f}" if latent else "-"
            print(f"| {label} | {total:.3f} | {lat} | {total / plain:.2f} | {ok} |")


if __name__ == "__main__":
    main()
