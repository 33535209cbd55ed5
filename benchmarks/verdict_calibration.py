"""The verdict on chains with a known answer: size, power, burn-in (docs/validation.md).

Every replicate is one call of :func:`numpyro_dsd.mcmc.diagnostic.diagnose_draws` with its
defaults (IMQ, median bandwidth frozen on the pooled draws, identity diffusion, kappa "auto",
level 0.05, ESS floor 100 per chain) on draws whose target is N(0, I) (scores -x), and the script
counts the verdicts:

- null (H0 true, "fail" should be at the level): i.i.d. draws; stationary AR(1) chains
  x_t = rho x_{t-1} + sqrt(1 - rho^2) e_t, rho in {0.5, 0.9, 0.95, 0.99}, n chosen so each chain
  has ESS >= 100; random-walk Metropolis on N(0, [[1, .8], [.8, 1]]) (scores of that target);
  NumPyro NUTS (defaults, 1,000 warm-up, 4 vectorised chains of 1,000) on the same target, the
  4 chains and the first chain alone;
- power: AR(1) rho = 0.9, n = 1000 (about 50 effective draws), 20% too wide, d = 1, 2, 5;
- burn-in: 4 AR(1) rho = 0.9 chains started 10 sd away with the transient kept;
- drift: 4 AR(1) rho = 0.99 chains whose mean moves by 1 sd along the run.

For each case: the fraction of replicates whose pooled verdict is fail / inconclusive / pass, and
the fraction in which *any* chain is "fail" (Holm over the chains keeps this at the level), with
Monte Carlo standard errors sqrt(r(1 - r)/R).

Run: ``.venv/bin/python benchmarks/verdict_calibration.py [--reps 200] [--only iid ar09 ...]``
(``--start 200 --reps 200``: the next 200 replicates of a case, to add to a first run;
``--estimator nystrom``: the diagnostic with the Nyström estimate, docs/scale.md)
"""

from __future__ import annotations

import argparse
import datetime
import functools
import sys
import time
from collections.abc import Callable

import jax
import numpy as np
from scipy.signal import lfilter

from numpyro_dsd.mcmc.diagnostic import diagnose_draws
from numpyro_dsd.mcmc.inputs import Draws
from numpyro_dsd.stein.diffusion import Identity

RWM_COV = np.array([[1.0, 0.8], [0.8, 1.0]])


def ar1(rng: np.random.Generator, c: int, n: int, d: int, rho: float, start=None) -> np.ndarray:
    e = rng.normal(size=(c, n, d)) * np.sqrt(1 - rho**2)
    e[:, 0] = rng.normal(size=(c, d)) if start is None else start
    return lfilter([1.0], [1.0, -rho], e, axis=1)


def rwm(rng: np.random.Generator, c: int, n: int) -> np.ndarray:
    chol, prec = np.linalg.cholesky(RWM_COV), np.linalg.inv(RWM_COV)
    x = rng.normal(size=(c, 2)) @ chol.T
    out = np.empty((c, n, 2))
    lp = -0.5 * np.einsum("ci,ij,cj->c", x, prec, x)
    for t in range(n):
        y = x + 1.68 * rng.normal(size=(c, 2)) @ chol.T
        lq = -0.5 * np.einsum("ci,ij,cj->c", y, prec, y)
        accept = np.log(rng.random(c)) < lq - lp
        x, lp = np.where(accept[:, None], y, x), np.where(accept, lq, lp)
        out[:, t] = x
    return out


def case(name: str) -> tuple[str, Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]]:
    """(must, draw function returning (x, scores)) of a case."""
    gauss = lambda x: (x, -x)  # noqa: E731
    table = {
        "iid_1": ("pass", lambda r: gauss(r.normal(size=(1, 1000, 2)))),
        "iid_4": ("pass", lambda r: gauss(r.normal(size=(4, 500, 2)))),
        "ar05_1": ("pass", lambda r: gauss(ar1(r, 1, 1000, 2, 0.5))),
        "ar05_4": ("pass", lambda r: gauss(ar1(r, 4, 1000, 2, 0.5))),
        "ar09_1": ("pass", lambda r: gauss(ar1(r, 1, 4000, 2, 0.9))),
        "ar09_4": ("pass", lambda r: gauss(ar1(r, 4, 3000, 2, 0.9))),
        "ar095_1": ("pass", lambda r: gauss(ar1(r, 1, 8000, 2, 0.95))),
        "ar099_1": ("pass", lambda r: gauss(ar1(r, 1, 20000, 2, 0.99))),
        # 4 slow chains, each with about 130 (rho 0.95) and 100 (rho 0.99) effective draws: the
        # pooled kernel matrix has (4n)^2 entries, so these are run only with --only
        "ar095_4": ("pass", lambda r: gauss(ar1(r, 4, 5000, 2, 0.95))),
        "ar099_4": ("pass", lambda r: gauss(ar1(r, 4, 20000, 2, 0.99))),
        "rwm_1": ("pass", lambda r: _cov_scores(rwm(r, 1, 2000))),
        "rwm_4": ("pass", lambda r: _cov_scores(rwm(r, 4, 1000))),
        "nuts_1": ("pass", lambda r: _cov_scores(nuts(r)[:1])),
        "nuts_4": ("pass", lambda r: _cov_scores(nuts(r))),
        "wide_d1": ("fail", lambda r: gauss(1.2 * ar1(r, 1, 1000, 1, 0.9))),
        "wide_d2": ("fail", lambda r: gauss(1.2 * ar1(r, 1, 1000, 2, 0.9))),
        "wide_d5": ("fail", lambda r: gauss(1.2 * ar1(r, 1, 1000, 5, 0.9))),
        "burnin_4": ("not pass", lambda r: gauss(ar1(r, 4, 1000, 2, 0.9, start=10.0))),
        "drift_4": ("not pass", lambda r: gauss(_drift(r))),
    }
    return table[name]


@functools.cache
def _nuts_sampler():  # one MCMC object: its compiled sampler is reused by every replicate
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    def model():
        numpyro.sample("x", dist.MultivariateNormal(np.zeros(2), RWM_COV))

    kw = {"num_chains": 4, "chain_method": "vectorized", "progress_bar": False}
    return MCMC(NUTS(model), num_warmup=1000, num_samples=1000, **kw)


def nuts(rng: np.random.Generator) -> np.ndarray:
    """4 NUTS chains of 1,000 draws of N(0, RWM_COV), (4, 1000, 2); the 1- and 4-chain cases
    of one replicate share the run."""
    return _nuts_run(int(rng.integers(2**31)))


@functools.cache
def _nuts_run(seed: int) -> np.ndarray:
    from zoo import free_executables  # NumPyro leaks an executable per run (benchmarks/zoo.py)

    mcmc = _nuts_sampler()
    mcmc.run(jax.random.key(seed))
    x = np.asarray(mcmc.get_samples(group_by_chain=True)["x"], dtype=np.float64)
    if free_executables():  # the cached sampler's executables are gone: build a new one
        _nuts_sampler.cache_clear()
    return x


def _cov_scores(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draws of N(0, RWM_COV) (the RWM and NUTS cases) and their exact scores."""
    return x, -x @ np.linalg.inv(RWM_COV)


def _drift(rng: np.random.Generator) -> np.ndarray:
    x = ar1(rng, 4, 2000, 2, 0.99)
    return x + np.linspace(-0.5, 0.5, 2000)[None, :, None]


CASES = (
    "iid_1 iid_4 ar05_1 ar05_4 ar09_1 ar09_4 ar095_1 rwm_1 rwm_4 wide_d1 wide_d2 wide_d5 "
    "burnin_4 drift_4"
).split()


def run_case(
    name: str, reps: int, num_bootstrap: int, start: int = 0, estimator: str = "exact"
) -> dict:
    must, draw = case(name)
    counts = {"fail": 0, "inconclusive": 0, "pass": 0, "any_chain_fail": 0}
    ess, t0, inconclusive_given_ess = [], time.perf_counter(), []
    for r in range(start, start + reps):
        x, s = draw(np.random.default_rng(10_000 + r))
        draws = Draws(jax.numpy.asarray(x), jax.numpy.asarray(s), None, ())
        ds = diagnose_draws(
            draws,
            Identity(),
            rng_key=jax.random.key(r),
            num_bootstrap=num_bootstrap,
            estimator=estimator,
        )
        counts[str(ds.verdict_pooled.values)] += 1
        counts["any_chain_fail"] += bool(np.any(ds.verdict.values == "fail"))
        ess.append(float(ds.ess.values.min()))
        if ess[-1] >= ds.attrs["min_ess"]:
            inconclusive_given_ess.append(str(ds.verdict_pooled.values) == "inconclusive")
    rates = {k: v / reps for k, v in counts.items()}
    given = inconclusive_given_ess
    rates["inconclusive_given_ess"] = (np.mean(given), len(given)) if given else (np.nan, 0)
    return {
        "case": name,
        "must": must,
        "shape": "x".join(map(str, x.shape)),
        "median min chain ESS": float(np.median(ess)),
        **rates,
        "seconds": time.perf_counter() - t0,
    }


def fmt(rate: float, reps: int) -> str:
    return f"{rate:.3f} ± {np.sqrt(rate * (1 - rate) / reps):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--num-bootstrap", type=int, default=300)
    parser.add_argument("--only", nargs="*", default=CASES)
    parser.add_argument("--start", type=int, default=0, help="first replicate (more of a case)")
    parser.add_argument("--estimator", default="exact", choices=("exact", "nystrom"))
    args = parser.parse_args()
    print(f"# {' '.join(sys.argv)}  ({datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC)")
    print(
        "| case | must | chains x n x d | median min chain ESS | pooled fail | pooled "
        "inconclusive | pooled pass | any chain fail | inconclusive if every chain ESS >= 100 "
        "(runs) | s |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.only:
        row = run_case(name, args.reps, args.num_bootstrap, args.start, args.estimator)
        rates = [fmt(row[k], args.reps) for k in ("fail", "inconclusive", "pass", "any_chain_fail")]
        print(
            f"| {name} | {row['must']} | {row['shape']} | {row['median min chain ESS']:.0f} | "
            + " | ".join(rates)
            + " | {:.3f} ({})".format(*row["inconclusive_given_ess"])
            + f" | {row['seconds']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
