"""Stein thinning of NUTS output that still contains its walk in from a bad starting point.

Runs NUTS on a correlated 2-d Gaussian from a start far out in the tails and keeps the warm-up
draws, so the first draws are burn-in. Thins the 2000 draws to 50 in two ways: greedy Stein
thinning (Riabiz et al. 2022; :func:`numpyro_dsd.mcmc.thinning.stein_thin`) and naive thinning
(every 40th draw), and compares their kernel Stein discrepancies with one kernel, its bandwidth
resolved on all 2000 draws. Naive thinning keeps the starting point; Stein thinning drops the
burn-in and spreads the 50 points over the target. Saves ``examples/figures/stein_thinning.png``.

Run: ``python examples/stein_thinning.py`` (well under a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer import MCMC, NUTS, init_to_value  # noqa: E402

from numpyro_dsd import IMQ, ksd  # noqa: E402
from numpyro_dsd.mcmc.thinning import stein_thin  # noqa: E402
from numpyro_dsd.model.targets import model_draws  # noqa: E402

FIGURE = Path(__file__).parent / "figures" / "stein_thinning.png"
MEAN = jnp.array([1.0, -1.0])
COV = jnp.array([[1.0, 0.9], [0.9, 1.0]])
START = jnp.array([7.0, -6.0])


def model() -> None:
    """theta ~ N(MEAN, COV), correlation 0.9."""
    numpyro.sample("theta", dist.MultivariateNormal(MEAN, COV))


def run_nuts(seed: int, num_warmup: int, num_samples: int) -> tuple[dict, dict]:
    """NUTS from ``START``; returns the warm-up and the sampling draws concatenated, as
    ``{site: (1, draws, ...)}``, and their recorded potential-energy gradients."""
    kernel = NUTS(model, init_strategy=init_to_value(values={"theta": START}))
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, progress_bar=False)
    mcmc.warmup(jax.random.key(seed), collect_warmup=True, extra_fields=("z_grad",))
    warm, warm_grad = mcmc.get_samples(), mcmc.get_extra_fields()["z_grad"]
    mcmc.run(mcmc.post_warmup_state.rng_key, extra_fields=("z_grad",))
    post, post_grad = mcmc.get_samples(), mcmc.get_extra_fields()["z_grad"]

    def join(a: dict, b: dict) -> dict:
        return {k: jnp.concatenate([a[k], b[k]])[None] for k in a}

    return join(warm, post), join(warm_grad, post_grad)


def mahalanobis(theta: np.ndarray) -> np.ndarray:
    """Distance from the target's mean in its own metric, for (..., 2) points."""
    r = theta - np.asarray(MEAN)
    return np.sqrt(np.einsum("...i,ij,...j->...", r, np.linalg.inv(np.asarray(COV)), r))


def plot(theta: np.ndarray, stein: np.ndarray, naive: np.ndarray, ksds: dict) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    gx, gy = np.meshgrid(np.linspace(-3.0, 8.0, 200), np.linspace(-7.0, 4.0, 200))
    grid = mahalanobis(np.stack([gx, gy], axis=-1))
    ax.contour(gx, gy, grid, levels=[1.0, 2.0, 3.0], colors="0.75", linewidths=0.8)
    ax.plot(theta[:, 0], theta[:, 1], ".", color="0.6", ms=2, alpha=0.5, label="all 2000 draws")
    ax.plot(theta[:15, 0], theta[:15, 1], "-", color="0.4", lw=0.8, label="first 15 draws")
    ax.plot(*naive.T, "s", mfc="none", color="tab:blue", ms=7,
            label=f"every 40th draw (KSD {ksds['naive']:.3f})")  # fmt: skip
    ax.plot(*stein.T, "o", color="tab:red", ms=4,
            label=f"Stein thinning (KSD {ksds['stein']:.3f})")  # fmt: skip
    ax.set(xlabel=r"$\theta_1$", ylabel=r"$\theta_2$", title="50 of 2000 NUTS draws")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    FIGURE.parent.mkdir(exist_ok=True)
    fig.savefig(FIGURE, dpi=120)


def main(seed: int = 0, num_warmup: int = 100, num_samples: int = 1900, m: int = 50) -> None:
    samples, z_grad = run_nuts(seed, num_warmup, num_samples)
    draws = model_draws(model, samples, z_grad=z_grad)
    x, s = draws.x[0], draws.scores[0]  # (2000, 2) unconstrained draws and scores
    n = x.shape[0]
    kernel = IMQ(bandwidth="sclmed").frozen(x)  # one bandwidth for every subset

    start = time.perf_counter()
    res = stein_thin(samples, model, num_points=m, kernel=kernel)
    seconds = time.perf_counter() - start
    naive = np.arange(0, n, n // m)[:m]
    after_warmup = num_warmup + np.arange(0, num_samples, num_samples // m)[:m]

    ksds = {
        "stein": float(res.ksd),
        "naive": float(ksd(x[naive], s[naive], kernel=kernel)),
        "naive_after_warmup": float(ksd(x[after_warmup], s[after_warmup], kernel=kernel)),
        "all": float(ksd(x, s, kernel=kernel)),
    }
    print(f"Stein thinning {n} -> {m} draws took {seconds:.2f} s (compilation included)")
    print(f"{'selection':<40}{'KSD':>8}")
    print(f"{'Stein thinning':<40}{ksds['stein']:>8.4f}")
    print(f"{'every ' + str(n // m) + 'th draw':<40}{ksds['naive']:>8.4f}")
    print(f"{'every k-th draw after the warm-up':<40}{ksds['naive_after_warmup']:>8.4f}")
    print(f"{'all ' + str(n) + ' draws':<40}{ksds['all']:>8.4f}")
    theta = np.asarray(samples["theta"][0])
    far = mahalanobis(theta) > 4.0  # the start and the walk in
    print(
        f"draws beyond 4 sd (burn-in): {int(far.sum())} of {n}; kept by every-k-th thinning: "
        f"{int(far[naive].sum())}, by Stein thinning: {int(far[np.asarray(res.indices)].sum())}"
    )
    plot(theta, np.asarray(res.samples["theta"]), theta[naive], ksds)
    print(f"saved {FIGURE}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--m", type=int, default=50)
    args = parser.parse_args()
    main(seed=args.seed, m=args.m)
