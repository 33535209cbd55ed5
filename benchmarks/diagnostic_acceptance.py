"""Pass and rejection rates of ``ksd_diagnostic`` on a NumPyro model with a closed-form posterior.

Bayesian linear regression with known noise (d = 3): beta ~ N(0, 2^2 I), y ~ N(X beta, 1), so the
posterior is N(m, P^-1), P = X^T X + I/4. Draws fed to the diagnostic (4 chains each):

- ``exact``: independent posterior draws (H0 true);
- ``nuts``: NumPyro NUTS (H0 true up to MCMC error);
- ``wide``: exact draws scaled 20% too wide about the mean;
- ``tail``: exact draws with the upper 10% tail of the first coordinate removed (resampled from
  the rest);
- ``ula``: an unadjusted Langevin chain with step 1/lambda_max(P) (the stiffest variance doubled).

The model's scores are computed by the diagnostic itself (``model_draws``), as a user would.
Prints, per case, the fraction of seeds with p > 0.05 and with p < 0.01, per chain and pooled.

Run: ``.venv/bin/python benchmarks/diagnostic_acceptance.py [--seeds 100] [--n 1000]``.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS

from numpyro_dsd import ksd_diagnostic

D, CHAINS = 3, 4


def regression(X, y=None):
    beta = numpyro.sample("beta", dist.Normal(0.0, 2.0).expand([X.shape[1]]).to_event(1))
    numpyro.sample("y", dist.Normal(X @ beta, 1.0), obs=y)


def problem() -> dict:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, D))
    y = X @ np.array([1.0, -1.0, 0.5]) + rng.normal(size=30)
    prec = X.T @ X + np.eye(D) / 4.0
    cov = np.linalg.inv(prec)
    return {"X": X, "y": y, "prec": prec, "mean": cov @ X.T @ y, "L": np.linalg.cholesky(cov)}


def exact(post: dict, rng: np.random.Generator, n: int, scale: float = 1.0) -> np.ndarray:
    z = rng.normal(size=(CHAINS, n, D))
    return post["mean"] + scale * z @ post["L"].T


def tail(post: dict, rng: np.random.Generator, n: int) -> np.ndarray:
    x = exact(post, rng, 2 * n)
    cut = post["mean"][0] + 1.2816 * post["L"][0, 0]  # upper 10% of the first coordinate
    return np.stack([c[c[:, 0] < cut][:n] for c in x])


def ula(post: dict, rng: np.random.Generator, n: int, burn: int = 300) -> np.ndarray:
    h = 1.0 / np.linalg.eigvalsh(post["prec"]).max()
    x, out = np.tile(post["mean"], (CHAINS, 1)), []
    for t in range(n + burn):
        x = x - h * (x - post["mean"]) @ post["prec"] + np.sqrt(2 * h) * rng.normal(size=x.shape)
        if t >= burn:
            out.append(x.copy())
    return np.stack(out, axis=1)


def nuts(post: dict, seed: int, n: int) -> np.ndarray:
    mcmc = MCMC(NUTS(regression), num_warmup=300, num_samples=n, num_chains=CHAINS)
    mcmc.chain_method, mcmc.progress_bar = "vectorized", False
    mcmc.run(jax.random.key(seed), post["X"], post["y"])
    return np.asarray(mcmc.get_samples(group_by_chain=True)["beta"])


def draws(case: str, post: dict, seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return {
        "exact": lambda: exact(post, rng, n),
        "nuts": lambda: nuts(post, seed, n),
        "wide": lambda: exact(post, rng, n, scale=1.2),
        "tail": lambda: tail(post, rng, n),
        "ula": lambda: ula(post, rng, n),
    }[case]()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100, help="seeds for exact draws")
    parser.add_argument("--nuts-seeds", type=int, default=30, help="seeds for NUTS (slow)")
    parser.add_argument("--bad-seeds", type=int, default=20, help="seeds for the biased cases")
    parser.add_argument("--n", type=int, default=1000, help="draws per chain")
    parser.add_argument("--n-boot", type=int, default=500)
    parser.add_argument("--cases", nargs="*", default=["exact", "nuts", "wide", "tail", "ula"])
    args = parser.parse_args()
    post = problem()
    print(f"n = {args.n} x {CHAINS} chains, d = {D}, n_boot = {args.n_boot}, IMQ med (frozen)")
    head = "case     seeds  chain p>0.05  pooled p>0.05  chain p<0.01  pooled p<0.01  s/seed"
    print(head)
    for case in args.cases:
        seeds = {"exact": args.seeds, "nuts": args.nuts_seeds}.get(case, args.bad_seeds)
        chains, pooled, start = [], [], time.perf_counter()
        for seed in range(seeds):
            x = draws(case, post, seed, args.n)
            ds = ksd_diagnostic(
                {"beta": x},
                regression,
                (post["X"], post["y"]),
                num_bootstrap=args.n_boot,
                rng_key=jax.random.key(seed),
            )
            chains.append(ds.pvalue.values)
            pooled.append(float(ds.pvalue_pooled))
        c, p = np.concatenate(chains), np.array(pooled)
        secs = (time.perf_counter() - start) / seeds
        print(
            f"{case:<8} {seeds:>5}  {np.mean(c > 0.05):>12.3f}  {np.mean(p > 0.05):>13.3f}  "
            f"{np.mean(c < 0.01):>12.3f}  {np.mean(p < 0.01):>13.3f}  {secs:>6.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
