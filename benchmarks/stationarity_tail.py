"""Far-tail size of the stationarity test's statistics (docs/benchmarks.md, "The stationarity
test's tail").

The verdict's per-chain thresholds lie far in the tail: for one of 4 chains Holm's first
threshold is 0.05 x 0.2 / 4 = 0.0025 for the whole stationarity test, about 2e-4 for each of its
statistics (Bonferroni over about 12). For single stationary chains this script prints, for each
family of Geweke's start-versus-end statistics (numpyro_dsd.mcmc.stationarity), the ratio of the
rate of p <= a to a (1 is exact, above 1 is liberal), and the rate at which the whole test's
p-value is <= 0.0025 and <= 0.01.

Cases: AR(1) chains on N(0, I) (rho 0.5 and 0.9) and a funnel-like scale mixture with i.i.d.
draws (heavy tails: x = e^(v/2) eps, v ~ N(0, 3^2)), d = 2.

Run: ``.venv/bin/python benchmarks/stationarity_tail.py [--reps 6000]``
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.signal import lfilter

from numpyro_dsd.mcmc.stationarity import _start_vs_end, stationarity

FAMILIES = ("location, 1% window", "location, 10% window", "spread, 1%", "spread, 10%")
LEVELS = (0.01, 0.001, 0.0002)


def ar1(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    e = rng.normal(size=(1, n, 2)) * np.sqrt(1 - rho**2)
    e[:, 0] = rng.normal(size=(1, 2))
    return lfilter([1.0], [1.0, -rho], e, axis=1)


def funnel(rng: np.random.Generator, n: int) -> np.ndarray:
    v = 3.0 * rng.normal(size=(1, n, 1))
    return np.concatenate([v, np.exp(v / 2) * rng.normal(size=(1, n, 1))], axis=-1)


CASES = {
    "AR(1) rho 0.9, n 3000": lambda r: ar1(r, 3000, 0.9),
    "AR(1) rho 0.5, n 1000": lambda r: ar1(r, 1000, 0.5),
    "funnel-like mixture, i.i.d., n 1000": lambda r: funnel(r, 1000),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=6000)
    args = parser.parse_args()
    head = " | ".join(f"{f} @{a:g}" for f in FAMILIES for a in LEVELS)
    print(f"| case | {head} | test p <= 0.0025 | test p <= 0.01 |")
    print("|---|" + "---:|" * (len(FAMILIES) * len(LEVELS) + 2))
    for case, draw in CASES.items():
        stats, whole = [], []
        for r in range(args.reps):
            x = draw(np.random.default_rng(50_000 + r))
            stats.append(_start_vs_end(x).reshape(len(FAMILIES), -1))
            whole.append(stationarity(x).pvalue)
        stats, whole = np.stack(stats, axis=1), np.array(whole)
        cells = [f"{np.mean(f <= a) / a:.2f}x" for f in stats for a in LEVELS]
        cells += [f"{np.mean(whole <= a):.4f}" for a in (0.0025, 0.01)]
        print(f"| {case} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
