"""Wall time of ``ksd_diagnostic`` as a user calls it: first call (with compilation) and warm call.

A NumPyro model with a d-dimensional latent (Bayesian linear regression, beta ~ N(0, I_d), 50
observations) and C x n draws from its posterior, given as a dict of constrained draws, so the
timed call includes the model's scores, the stationarity diagnostics, the prefix curves, the
per-chain and pooled wild bootstraps (1000 replicates) and the verdict. The first call runs in a
fresh process (compilation included); the warm call is the best of ``--repeat`` calls with new
draws of the same shape.

Run: ``.venv/bin/python benchmarks/diagnostic_time.py [--chains 4] [--n 1000] [--d 10]``.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist

from numpyro_dsd import ksd_diagnostic


def regression(X, y=None):
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    numpyro.sample("y", dist.Normal(X @ beta, 1.0), obs=y)


def posterior_draws(X, y, chains: int, n: int, seed: int) -> dict:
    prec = X.T @ X + np.eye(X.shape[1])
    cov = np.linalg.inv(prec)
    mean = cov @ X.T @ y
    z = np.random.default_rng(seed).normal(size=(chains, n, X.shape[1]))
    return {"beta": mean + z @ np.linalg.cholesky(cov).T}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--d", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, args.d))
    y = X @ rng.normal(size=args.d) + rng.normal(size=50)

    def call(seed: int) -> float:
        draws = posterior_draws(X, y, args.chains, args.n, seed)
        start = time.perf_counter()
        ds = ksd_diagnostic(draws, regression, (X, y), rng_key=jax.random.key(seed))
        assert str(ds.verdict_pooled.values) in {"pass", "fail", "inconclusive"}
        return time.perf_counter() - start

    first = call(0)
    warm = min(call(s) for s in range(1, args.repeat + 1))
    load = os.getloadavg()[0]
    print(
        f"| {args.chains} x {args.n} | {args.d} | {first:.2f} | {warm:.2f} | "
        f"{jax.devices()[0].platform} | {load:.1f} |"
    )


if __name__ == "__main__":
    main()
