"""The KSD diagnostic on a posterior known in closed form: NUTS, and a sampler R-hat cannot fault.

The model is a Bayesian linear regression with known noise, so the posterior is Gaussian and
known exactly. Two sets of four chains are diagnosed with :func:`numpyro_dsd.ksd_diagnostic`:

- NUTS (4 chains, vectorized);
- a "sampler" that returns independent draws of the right mean but a covariance 20% too wide in
  standard deviation (1.44 times the exact covariance). Its chains agree with each other, so
  R-hat is 1.00 and the ESS is large; only a comparison with the target itself can see it.

Each chain, and the pooled draws, get one verdict at the level 0.05: "pass", "fail" or
"inconclusive", with its reason. It combines the KSD test, a Stein moment test (is each
coordinate's spread right?) and a stationarity test, and adjusts for the number of chains
(Holm), so the p-values need no correcting by hand (docs/diagnostic.md, "The verdict"). With the
default seed, in our run:

- the wide draws are "fail" in every chain and pooled, on the Stein moment test: spread ratio
  1.41 to 1.49 per chain and 1.45 pooled (the true variance ratio is 1.44), p below 1e-30. The
  KSD test rejects them too (p=0.001, the smallest p-value the bootstrap can give,
  1/(1 + n_boot); KSD ratio 6 to 7 per chain, 20 pooled);
- NUTS's four chains are "pass" (KSD test p from 0.07 to 0.64, adjusted 0.47 to 1; ratio
  0.8 to 2.1), but its pooled draws are "fail": KSD test p=0.030 (adjusted p=0.050 <= 0.05),
  ratio 2.4. NUTS is exact in the limit, so this is a false alarm of the kind the level allows:
  Holm keeps the chance that any chain of a good run fails at or below 0.05, and the pooled
  verdict is one more test at 0.05.

Prints the table of :func:`numpyro_dsd.stein_summary` (verdict, KSD, KSD ratio, p-value, R-hat,
bulk ESS and reason per chain and pooled) and the pooled verdicts of both runs, stores the NUTS
run with its diagnostic and Stein inputs in ``examples/figures/ksd_diagnostic.nc`` and reads it
back, and saves the per-chain KSD ratio of both runs, ringed by verdict, side by side in
``examples/figures/ksd_diagnostic.png``. Works with ArviZ 0.23 (InferenceData) and 1.x
(DataTree).

Run: ``python examples/ksd_diagnostic.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import arviz as az  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402

from numpyro_dsd import ksd_diagnostic, plot_ksd, stein_summary  # noqa: E402
from numpyro_dsd.arviz import (  # noqa: E402
    add_diagnostics,
    add_stein_inputs,
    from_stein_inputs,
    load,
    read_stein_inputs,
    save,
)
from numpyro_dsd.model.targets import model_draws  # noqa: E402

FIGURES = Path(__file__).parent / "figures"
FIGURE = FIGURES / "ksd_diagnostic.png"
NETCDF = FIGURES / "ksd_diagnostic.nc"
NOISE = 0.5  # known noise standard deviation
PRIOR = 2.0  # prior standard deviation of each coefficient
WIDTH = 1.2  # the wrong sampler's draws are this much too wide (in standard deviation)


def regression(X: jax.Array, y: jax.Array | None = None) -> None:
    """coef ~ N(0, PRIOR^2 I), y ~ N(X coef, NOISE^2)."""
    coef = numpyro.sample("coef", dist.Normal(0.0, PRIOR).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ coef, NOISE), obs=y)


def simulate(key: jax.Array, n: int = 40, d: int = 3) -> tuple[jax.Array, jax.Array]:
    kx, ky = jax.random.split(key)
    X = jax.random.normal(kx, (n, d))
    coef = jnp.arange(1.0, d + 1.0) * jnp.array([1.0, -1.0, 0.5])[:d]
    return X, X @ coef + NOISE * jax.random.normal(ky, (n,))


def exact_posterior(X: jax.Array, y: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the Gaussian posterior of ``coef``."""
    precision = X.T @ X / NOISE**2 + jnp.eye(X.shape[1]) / PRIOR**2
    cov = jnp.linalg.inv(precision)
    return np.asarray(cov @ X.T @ y / NOISE**2), np.asarray(cov)


def run_nuts(data: tuple, seed: int, num_samples: int) -> MCMC:
    mcmc = MCMC(
        NUTS(regression),
        num_warmup=500,
        num_samples=num_samples,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(seed), *data, extra_fields=("z_grad",))
    return mcmc


def wide_draws(mean: np.ndarray, cov: np.ndarray, seed: int, num_samples: int) -> dict:
    """Independent draws from N(mean, WIDTH^2 cov) in 4 'chains', as ``{site: (4, n, d)}``."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((4, num_samples, mean.size))
    return {"coef": mean + WIDTH * z @ np.linalg.cholesky(cov).T}


def main(num_samples: int = 1000, seed: int = 0, n_boot: int = 1000) -> None:
    data = simulate(jax.random.key(seed))
    mean, cov = exact_posterior(*data)
    print(f"exact posterior mean {np.round(mean, 3)}, sd {np.round(np.sqrt(np.diag(cov)), 3)}")

    t0 = time.perf_counter()
    mcmc = run_nuts(data, seed + 1, num_samples)
    print(f"NUTS: 4 chains x {num_samples} draws in {time.perf_counter() - t0:.1f} s")
    wide = wide_draws(mean, cov, seed + 2, num_samples)

    key = jax.random.key(seed + 3)
    results = {}
    for label, draws in (("NUTS", mcmc), (f"exact draws, {WIDTH:g}x too wide", wide)):
        t0 = time.perf_counter()
        # An MCMC object carries its model, arguments and NUTS's gradients; a dict needs the model.
        ds = ksd_diagnostic(draws, regression, data, rng_key=key, num_bootstrap=n_boot)
        elapsed = time.perf_counter() - t0
        nuts = isinstance(draws, MCMC)
        samples = mcmc.get_samples(group_by_chain=True) if nuts else draws
        stein = model_draws(regression, samples, data)  # unconstrained draws and scores
        # ArviZ data for R-hat and ESS in the table (InferenceData in 0.x, DataTree in 1.x).
        idata = (
            az.from_numpyro(mcmc)
            if nuts
            else from_stein_inputs(stein.x, stein.scores, stein.site_names, posterior=draws)
        )
        print(f"\n{label} (diagnostic in {elapsed:.1f} s, {n_boot} bootstrap replicates)")
        print(stein_summary(ds, idata).to_string())
        results[label] = (ds, stein)

    alpha = results["NUTS"][0].attrs["alpha"]
    print(f"\npooled verdicts (level {alpha:g}):")
    for label, (ds, _) in results.items():
        print(f"  {label:<30}{ds['verdict_pooled'].item():<14}{ds['reason_pooled'].item()}")

    roundtrip(mcmc, *results["NUTS"])
    plot(results)


def roundtrip(mcmc: MCMC, ds, stein) -> None:
    """Store the run, its Stein inputs and its diagnostic in one netCDF file; diagnose the file
    again without the model (what ``numpyro-dsd diagnose FILE.nc`` does)."""
    idata = az.from_numpyro(mcmc)
    idata = add_stein_inputs(idata, stein.x, stein.scores, stein.site_names)
    idata = add_diagnostics(idata, ds)
    FIGURES.mkdir(parents=True, exist_ok=True)
    save(idata, NETCDF)
    back = load(NETCDF)
    x, scores, names = read_stein_inputs(back)
    again = ksd_diagnostic(back, test=False)
    stored = back["stein_diagnostics"]
    same = np.allclose(np.asarray(stored["ksd"]), np.asarray(ds["ksd"]))
    print(f"\nsaved to {NETCDF} and loaded back ({type(back).__name__}):")
    print(f"  stein_inputs: x {x.shape}, sites {names}; stored KSD unchanged: {same}")
    print(f"  KSD re-computed from the file alone: {np.round(again['ksd'].values, 4)}")


def plot(results: dict) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, (label, (ds, _)) in zip(axes, results.items(), strict=True):
        plot_ksd(ds, ax=ax)
        # plot_ksd's title: what is plotted, the pooled verdict and reason, then the settings.
        ax.set_title("\n".join([label, *ax.get_title().splitlines()[:2]]), fontsize=10)
    fig.tight_layout()
    fig.savefig(FIGURE, dpi=110)
    plt.close(fig)
    print(f"figure saved to {FIGURE}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.num_samples, args.seed, args.n_boot)
