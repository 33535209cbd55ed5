"""The KSD along the chain: how exact, biased and not-yet-converged chains look.

The target is a correlated 2-d Gaussian written as a NumPyro model. Three Langevin chains of the
same length are diagnosed together with :func:`numpyro_dsd.ksd_diagnostic` (one kernel for all,
its bandwidth frozen on the pooled draws), which returns :math:`\\sqrt{\\hat V_m}` of the first m
draws of each chain at log-spaced m (``ksd_trace``):

- *exact*: Metropolis-adjusted Langevin (MALA) started at a draw from the target;
- *burn-in*: the same MALA started far out in the tails, with no warm-up discarded;
- *ULA*: unadjusted Langevin with too large a step, whose stationary law is too wide.

For exact draws the curve falls like :math:`m^{-1/2}` (slope -1/2 on log-log axes); the biased
chain levels off at its bias; the burn-in chain stays high while it walks in and then falls
faster than :math:`m^{-1/2}` as the early draws are diluted.

The diagnostic's verdict per chain, at the level 0.05 (docs/diagnostic.md, "The verdict"), in
our run with the default seed:

- *exact*: "pass" (KSD test p=0.83, adjusted 1; KSD ratio 0.56);
- *ULA*: "fail" on the KSD test (p=0.003, adjusted 0.017, KSD ratio 13). Its spread ratio is
  1.29 over both coordinates (p=4e-22 against its own spread), but the spread pooled over the
  chains, widened by the burn-in chain's far draws, no longer sees it (p=0.84): one grossly
  wrong chain can mask another's spread error on that test (docs/validation.md says what the
  verdict does not do yet);
- *burn-in*: "inconclusive" (ESS 78 < 100). The KSD test does not see the kept burn-in (p=0.42,
  KSD ratio 1.1: the wild bootstrap's sign blocks absorb the transient, docs/math.md §2.9), the
  moment test only weakly (spread ratio 2.9, p=0.075), and the stationarity test not at all
  (p=0.2, untrusted below 100 effective draws): the transient lasts about 15 draws, half an
  autocorrelation time of this slow chain. So the chain can neither pass nor fail: it stops at
  "inconclusive".
- *pooled*: "inconclusive", because chain 2 fails (the pooled draws contain it); the pooled tests
  alone would pass them (KSD p=0.13), diluted by the two other chains.

Prints the curves' values and late slopes, then the verdict, KSD ratio, p-values, ESS and reason
per chain and pooled, and checks one curve against :func:`numpyro_dsd.ksd_trace`; saves
``examples/figures/ksd_trace.png`` (:func:`numpyro_dsd.plot_ksd_trace`).

Run: ``python examples/ksd_trace.py`` (about half a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402

from numpyro_dsd import ksd_diagnostic, ksd_trace, plot_ksd_trace  # noqa: E402
from numpyro_dsd.model.targets import log_density_fn  # noqa: E402
from numpyro_dsd.stein.kernels import default_kernel  # noqa: E402

FIGURE = Path(__file__).parent / "figures" / "ksd_trace.png"
MEAN = jnp.array([1.0, -1.0])
COV = jnp.array([[1.0, 0.6], [0.6, 1.0]])
FAR = jnp.array([-25.0, 25.0])  # start of the burn-in chain, 26 sd from the mean per coordinate
LABELS = ("exact (MALA)", "burn-in kept (MALA)", "biased (ULA)")


def model() -> None:
    """theta ~ N(MEAN, COV)."""
    numpyro.sample("theta", dist.MultivariateNormal(MEAN, COV))


def langevin(key, x0, log_prob, step: float, n: int, adjust: bool) -> jax.Array:
    """``n`` Langevin draws from ``x0``: x' = x + step s(x) + sqrt(2 step) xi, with a
    Metropolis-Hastings correction (MALA) when ``adjust``, without (ULA) otherwise."""
    value_and_score = jax.value_and_grad(log_prob)

    def log_q(to, frm, s_frm):  # log density of proposing ``to`` from ``frm``, up to a constant
        return -jnp.sum((to - frm - step * s_frm) ** 2) / (4.0 * step)

    def one(carry, key):
        x, lp, s = carry
        k_prop, k_acc = jax.random.split(key)
        y = x + step * s + jnp.sqrt(2.0 * step) * jax.random.normal(k_prop, x.shape)
        lp_y, s_y = value_and_score(y)
        log_ratio = lp_y - lp + log_q(x, y, s_y) - log_q(y, x, s)
        accept = jnp.log(jax.random.uniform(k_acc)) < log_ratio if adjust else True
        new = jax.tree.map(lambda a, b: jnp.where(accept, a, b), (y, lp_y, s_y), (x, lp, s))
        return new, new[0]

    lp0, s0 = value_and_score(x0)
    return jax.lax.scan(one, (x0, lp0, s0), jax.random.split(key, n))[1]


def chains(seed: int, n: int) -> np.ndarray:
    """The three chains as one (3, n, 2) array, in the order of ``LABELS``."""
    log_prob = log_density_fn(model, ())[0]  # flat unconstrained theta -> log joint
    k_start, k1, k2, k3 = jax.random.split(jax.random.key(seed), 4)
    start = MEAN + jnp.linalg.cholesky(COV) @ jax.random.normal(k_start, (2,))
    runs = [
        langevin(k1, start, log_prob, step=0.9, n=n, adjust=True),
        langevin(k2, FAR, log_prob, step=0.05, n=n, adjust=True),
        langevin(k3, start, log_prob, step=0.3, n=n, adjust=False),
    ]
    return np.stack([np.asarray(r) for r in runs])


def slope(m: np.ndarray, v: np.ndarray, lo: float) -> float:
    """Least-squares slope of log v on log m over m >= lo."""
    keep = m >= lo
    return float(np.polyfit(np.log(m[keep]), np.log(v[keep]), 1)[0])


def main(num_draws: int = 3000, seed: int = 0, n_boot: int = 300) -> None:
    t0 = time.perf_counter()
    x = chains(seed, num_draws)
    print(f"3 chains x {num_draws} draws in {time.perf_counter() - t0:.1f} s")
    sd = x[:, num_draws // 2 :].std(axis=1)
    print("sd of the second half of each chain (exact: 1.00, 1.00):")
    for label, (s1, s2) in zip(LABELS, sd, strict=True):
        print(f"  {label:<22}{s1:.2f}, {s2:.2f}")

    t0 = time.perf_counter()
    ds = ksd_diagnostic({"theta": x}, model, rng_key=jax.random.key(seed + 1), num_bootstrap=n_boot)
    print(f"ksd_diagnostic in {time.perf_counter() - t0:.1f} s ({n_boot} bootstrap replicates)")
    ds = ds.assign_coords(chain=list(LABELS))

    m = ds["prefix"].values  # the prefix lengths
    shown = sorted({0, *(int(np.argmin(np.abs(m - t))) for t in (100, 1000)), m.size - 1})
    head = "".join(f"{'m=' + str(m[i]):>10}" for i in shown)
    print(f"\n{'chain':<22}{head}{'slope':>8}")
    for c in LABELS:
        v = ds["ksd_trace"].sel(chain=c).values
        vals = "".join(f"{v[i]:>10.4f}" for i in shown)
        print(f"{c:<22}{vals}{slope(m, v, 100):>8.2f}")
    print("(slope: least-squares slope of log KSD on log m over m >= 100; exact draws: -1/2)")
    print_verdicts(ds)

    # The same curve from the array function, with the kernel the diagnostic froze.
    log_prob = log_density_fn(model, ())[0]
    scores = jax.vmap(jax.vmap(jax.grad(log_prob)))(jnp.asarray(x))
    kernel = default_kernel().frozen(jnp.asarray(x).reshape(-1, 2))
    m1, v1 = ksd_trace(x[0], scores[0], kernel=kernel, prefixes=m)
    same = np.allclose(np.asarray(v1), ds["ksd_trace"].isel(chain=0).values, rtol=1e-4)
    print(f"ksd_trace(x[0], scores[0]) matches the diagnostic's curve: {same}")
    plot(ds)


def print_verdicts(ds) -> None:
    """The verdict per chain and pooled, with the numbers it rests on and its reason."""
    keys = ("ksd_ratio", "pvalue", "pvalue_moments", "pvalue_stationarity", "ess")
    print(f"\nverdict at level {ds.attrs['alpha']:g} (chains adjusted for their number by Holm):")
    head = f"{'KSD ratio':>10}{'p KSD':>8}{'p mom.':>9}{'p stat.':>9}{'ESS':>6}  {'verdict':<14}"
    print(f"{'chain':<22}{head}reason")
    rows = [(c, ds.sel(chain=c), "") for c in LABELS] + [("pooled", ds, "_pooled")]
    for label, row, suffix in rows:
        ratio, p, p_mom, p_stat, ess = (float(row[k + suffix]) for k in keys)
        verdict, reason = (row[k + suffix].item() for k in ("verdict", "reason"))
        cells = f"{ratio:>10.2f}{p:>8.3f}{p_mom:>9.1e}{p_stat:>9.1e}{ess:>6.0f}"
        print(f"{label:<22}{cells}  {verdict:<14}{reason}")
    floor = f"ESS {ds.attrs['min_ess']:g} per chain"
    print(
        "(p KSD: the KSD test; p mom.: the Stein moment test; p stat.: the stationarity test, "
        f"trusted from {floor})"
    )


def plot(ds) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    plot_ksd_trace(ds, ax=ax)
    ax.set_title("KSD of the first m draws (IMQ, median bandwidth, M = I)", fontsize=10)
    fig.tight_layout()
    for legend in fig.legends:  # ArviZ 1.x puts the chain legend on the figure: move it inside
        legend.set_bbox_to_anchor(ax.get_position(), transform=fig.transFigure)
        legend.set_loc("upper right")
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=110)
    plt.close(fig)
    print(f"figure saved to {FIGURE}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-draws", type=int, default=3000)
    parser.add_argument("--n-boot", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.num_draws, args.seed, args.n_boot)
