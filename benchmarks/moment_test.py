"""Size and power of the Stein moment test and of the simpler variants it was chosen over
(docs/benchmarks.md, "The Stein moment test").

The test (numpyro_dsd.mcmc.moments, docs/math.md §2.10) checks E[-s_k (x_k - c_k)] = 1 for every
coordinate k and for the trace. The variants differ in how the ratio r_k is referred to a
reference law:

- ``linear``: the difference r_k - 1 over its ESS-based standard error, t with ESS - 1 d.o.f.;
- ``log``: log r_k over the standard error of the linearised series, t with ESS - 1 d.o.f.;
- ``log+bias``: as ``log``, with the centring bias Cov(mean s_k, mean x_k) subtracted and the
  se^2 / 2 bias of a log mean added;
- ``package``: ``moment_test`` itself (the cube root of r_k with the same two bias terms, t with
  ESS / 2 - 1 d.o.f.).

With ``--per-chain``: 4 chains per run (AR(1) on N(0, I), and exact draws of Neal's funnel in
d = 5, whose x is heavy-tailed), each chain tested at Holm's first per-chain threshold of
the verdict (0.05 x 0.2 / 4 = 0.0025) and at 0.01, with its own yardstick (``moment_test`` of the
chain alone) and with the yardstick pooled over the 4 chains (``moment_tests``, the package's
per-chain test).

Single chains of N(0, I) draws with the exact scores: rejection rates of the Bonferroni p-value at
0.05 and 0.01 (the verdict spends 0.2 x 0.05 = 0.01 on this test), R replicates each, for stationary
AR(1) chains (size) and AR(1) rho = 0.9, n = 1000 chains whose spread is 20% too wide or too
narrow (power).

Run: ``.venv/bin/python benchmarks/moment_test.py [--reps 300] [--per-chain]``
"""

from __future__ import annotations

import argparse

import numpy as np
from numpyro.diagnostics import effective_sample_size
from scipy.signal import lfilter
from scipy.stats import t as t_dist

from numpyro_dsd.mcmc.moments import moment_test, moment_tests

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


def funnel(rng: np.random.Generator, chains: int, n: int, d: int = 5) -> tuple[np.ndarray, ...]:
    """Exact draws (chains, n, d) of Neal's funnel, v ~ N(0, 9), x | v ~ N(0, e^v), and scores."""
    v = 3 * rng.normal(size=(chains, n, 1))
    x = np.exp(v / 2) * rng.normal(size=(chains, n, d - 1))
    s_v = -v / 9 - (d - 1) / 2 + 0.5 * np.sum(x**2, -1, keepdims=True) * np.exp(-v)
    return np.concatenate([v, x], -1), np.concatenate([s_v, -x * np.exp(-v)], -1)


def _gaussian(n: int, d: int, rho: float):
    def draws(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x = ar1(rng, n, d, rho, chains=4)
        return x, -x

    return draws


PER_CHAIN = {  # name: draws and scores of 4 chains from a seeded generator
    "4 x i.i.d., n 500, d 2": _gaussian(500, 2, 0.0),
    "4 x AR(1) rho 0.5, n 1000, d 2": _gaussian(1000, 2, 0.5),
    "4 x AR(1) rho 0.9, n 3000, d 2": _gaussian(3000, 2, 0.9),
    "4 x i.i.d. Neal's funnel, n 1000, d 5": lambda rng: funnel(rng, 4, 1000),
}


def ar1(rng: np.random.Generator, n: int, d: int, rho: float, chains: int = 0) -> np.ndarray:
    """One chain (n, d), or ``chains`` chains (chains, n, d), of a stationary AR(1) on N(0, I)."""
    shape = (chains, n, d) if chains else (n, d)
    e = rng.normal(size=shape) * np.sqrt(1 - rho**2)
    e[..., 0, :] = rng.normal(size=shape[:-2] + (d,))
    return lfilter([1.0], [1.0, -rho], e, axis=-2)


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


def per_chain(reps: int) -> None:
    """Per-chain rejection rates with the chain's own and the pooled yardstick (docstring)."""
    levels = (0.0025, 0.01)
    print("| 4 chains | own @0.0025 | own @0.01 | pooled @0.0025 | pooled @0.01 |")
    print("|---|---:|---:|---:|---:|")
    for case, draws in PER_CHAIN.items():
        own, pooled = [], []
        for r in range(reps):
            x, s = draws(np.random.default_rng(20_000 + r))
            own += [moment_test(x[c : c + 1], s[c : c + 1]).pvalue for c in range(4)]
            pooled += [res.pvalue for res in moment_tests(x, s)[0]]
        cells = [f"{np.mean(np.array(p) <= a):.4f}" for p in (own, pooled) for a in levels]
        print(f"| {case} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=300)
    parser.add_argument("--per-chain", action="store_true")
    args = parser.parse_args()
    if args.per_chain:
        return per_chain(args.reps)
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
