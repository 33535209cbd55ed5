"""Size and power of the Nyström KSD test (issue 19; docs/scale.md, docs/benchmarks.md).

``ksd_test(x, s, estimator="nystrom")`` with its defaults (``flip_prob="auto"``,
``kappa="auto"``, m = ``default_num_inducing(n)``, a frozen ``IMQ()`` kernel) on R replicate
chains per scenario
(fixed seeds), rejection rates at alpha = 0.05 and 0.01 with the Monte Carlo standard error
sqrt(r (1 - r) / R):

- null: i.i.d. N(0, I) draws; a stationary AR(1) chain with rho = 0.9 on N(0, I);
- power: the same AR(1) chain 10% too wide (scores of N(0, I) at 1.1 x).

    python benchmarks/nystrom_calibration.py --reps 200 --n 10000 --d 5
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from bootstrap_calibration import kappa_arg  # the same "auto"-or-number option

from numpyro_dsd.mcmc.bootstrap import ksd_test
from numpyro_dsd.stein.kernels import IMQ
from numpyro_dsd.stein.nystrom import default_num_inducing


def ar1(rng: np.random.Generator, n: int, d: int, rho: float) -> np.ndarray:
    x, e = np.empty((n, d)), rng.standard_normal((n, d))
    x[0] = e[0]
    for i in range(1, n):
        x[i] = rho * x[i - 1] + np.sqrt(1 - rho**2) * e[i]
    return x


SCENARIOS = {
    "i.i.d. N(0, I)": lambda rng, n, d: rng.standard_normal((n, d)),
    "AR(1) rho 0.9": lambda rng, n, d: ar1(rng, n, d, 0.9),
    "AR(1) rho 0.9, 10% too wide": lambda rng, n, d: 1.1 * ar1(rng, n, d, 0.9),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=200)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--d", type=int, default=5)
    p.add_argument("--num-bootstrap", type=int, default=300)
    p.add_argument("--power-reps", type=int, default=50)
    p.add_argument("--only", nargs="+")
    p.add_argument("--estimator", default="nystrom", choices=("nystrom", "exact"))
    p.add_argument("--kappa", type=kappa_arg, default="auto", help="'auto' or a number")
    p.add_argument("--start", type=int, default=0, help="first replicate (more of a scenario)")
    args = p.parse_args()
    m = default_num_inducing(args.n)
    print(
        f"{args.estimator}, kappa = {args.kappa}, n = {args.n}, d = {args.d}, m = {m}, "
        f"B = {args.num_bootstrap}, float32, "
        f"{jax.device_count()} {jax.default_backend()} device(s)"
    )
    print("| scenario | R | reject at 0.05 | reject at 0.01 | median flip prob | s / rep |")
    print("|---|---|---|---|---|---|")
    for name, gen in SCENARIOS.items():
        if args.only and not any(o in name for o in args.only):
            continue
        reps = args.power_reps if "wide" in name else args.reps
        if reps == 0:
            continue
        pvals, probs, t0 = [], [], time.perf_counter()
        for r in range(args.start, args.start + reps):
            rng = np.random.default_rng(1000 + r)
            x = gen(rng, args.n, args.d)
            res = ksd_test(
                x,
                -x,
                kernel=IMQ(),
                num_bootstrap=args.num_bootstrap,
                estimator=args.estimator,
                kappa=args.kappa,
                rng_key=jax.random.key(r),
            )
            pvals.append(float(res.pvalue))
            probs.append(res.flip_prob[0])
        pv = np.array(pvals)
        cells = []
        for level in (0.05, 0.01):
            rate = float(np.mean(pv <= level))
            cells.append(f"{rate:.3f} ± {np.sqrt(rate * (1 - rate) / reps):.3f}")
        sec = (time.perf_counter() - t0) / reps
        print(
            f"| {name} | {reps} | {cells[0]} | {cells[1]} | {np.median(probs):.3f} | {sec:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
