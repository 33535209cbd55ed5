"""Size and power of the Stein moment test and of the simpler variants it was chosen over
(docs/benchmarks.md, "The Stein moment test").

The test (numpyro_dsd.mcmc.moments, docs/math.md §2.10) checks E[-s_k (x_k - c_k)] = 1 for every
coordinate k and for the trace. The variants differ in how the ratio r_k is referred to a
reference law:

- ``linear``: the difference r_k - 1 over its ESS-based standard error, t with ESS - 1 d.o.f.;
- ``log``: log r_k over the standard error of the linearised series, t with ESS - 1 d.o.f.;
- ``log+bias``: as ``log``, with the centring bias Cov(mean s_k, mean x_k) subtracted and the
  se^2 / 2 bias of a log mean added;
- ``package``: ``moment_test`` itself (``log+bias`` with ESS / 2 - 1 d.o.f.).

Single chains of N(0, I) draws with the exact scores: rejection rates of the Bonferroni p-value at
0.05 and 0.01 (the verdict spends 0.2 x 0.05 = 0.01 on this test), R replicates each, for stationary
AR(1) chains (size) and AR(1) rho = 0.9, n = 1000 chains whose spread is 20% too wide or too
narrow (power).

Run: ``.venv/bin/python benchmarks/moment_test.py [--reps 300]``
"""

from __future__ import annotations

import argparse

import numpy as np
from numpyro.diagnostics import effective_sample_size
from scipy.signal import lfilter
from scipy.stats import t as t_dist

from numpyro_dsd.mcmc.moments import moment_test

CASES = {  # name: (n, d, rho, scale)
    "AR(1) rho 0.5, n 1000, d 2": (1000, 2, 0.5, 1.0),
    "AR(1) rho 0.9, n 1000, d 1": (1000, 1, 0.9, 1.0),
    "AR(1) rho 0.9, n 4000, d 2": (4000, 2, 0.9, 1.0),
    "AR(1) rho 0.95, n 8000, d 2": (8000, 2, 0.95, 1.0),
    "AR(1) rho 0.99, n 20000, d 2": (20000, 2, 0.99, 1.0),
    "power: rho 0.9, n 1000, d 1, sd x 1.2": (1000, 1, 0.9, 1.2),
    "power: rho 0.9, n 1000, d 1, sd x 0.8": (1000, 1, 0.9, 0.8),
    "power: rho 0.9, n 1000, d 2, sd x 1.2": (1000, 2, 0.9, 1.2),
}


def ar1(rng: np.random.Generator, n: int, d: int, rho: float) -> np.ndarray:
    e = rng.normal(size=(n, d)) * np.sqrt(1 - rho**2)
    e[0] = rng.normal(size=d)
    return lfilter([1.0], [1.0, -rho], e, axis=0)


def variant(x: np.ndarray, s: np.ndarray, name: str) -> float:
    """Bonferroni p-value of one chain (n, d) under a simple variant (module docstring)."""
    a = -s * (x - x.mean(0))
    if x.shape[1] > 1:
        a = np.concatenate([a, a.sum(1, keepdims=True)], 1)
    target = np.append(np.ones(x.shape[1]), x.shape[1])[: a.shape[1]]
    a_bar = a.mean(0)
    if name == "log+bias":
        ess_s, ess_x = effective_sample_size(s[None]), effective_sample_size(x[None])
        r = np.array([np.corrcoef(s[:, k], x[:, k])[0, 1] for k in range(x.shape[1])])
        cov = r * np.sqrt(s.var(0) / ess_s * x.var(0) / ess_x)
        a_bar = a_bar - (np.append(cov, cov.sum()) if x.shape[1] > 1 else cov)
    u = a if name == "linear" else a / a_bar
    ess = np.clip(effective_sample_size(u[None]), 2, x.shape[0])
    se2 = u.var(0, ddof=1) / ess
    stat = a_bar - target if name == "linear" else np.log(a_bar / target)
    if name == "log+bias":
        stat = stat + se2 / 2
    p = 2 * t_dist.sf(np.abs(stat) / np.sqrt(se2), ess - 1)
    return float(min(1.0, p.min() * p.size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=300)
    args = parser.parse_args()
    names = ("linear", "log", "log+bias", "package")
    print("| case | " + " | ".join(f"{v} @0.05 | {v} @0.01" for v in names) + " |")
    print("|---|" + "---:|" * (2 * len(names)))
    for case, (n, d, rho, scale) in CASES.items():
        p = {v: [] for v in names}
        for r in range(args.reps):
            x = scale * ar1(np.random.default_rng(10_000 + r), n, d, rho)
            for v in names[:-1]:
                p[v].append(variant(x, -x, v))
            p["package"].append(moment_test(x[None], -x[None]).pvalue)
        cells = [f"{np.mean(np.array(p[v]) <= a):.3f}" for v in names for a in (0.05, 0.01)]
        print(f"| {case} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
