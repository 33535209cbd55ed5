"""Cost of the diagnostic's parts, and Stein thinning against stein-thinning, in one run.

Draws: C chains of i.i.d. N(0, I_d) draws with their exact scores (no model), so only the
diagnostic's own work is timed. Columns: the prefix curves (one lower pass per chain), the
per-chain bootstraps, the pooled bootstrap, and the whole ``diagnose_draws``; then greedy Stein
thinning (``thin_indices``) against ``stein_thinning.thinning.thin`` (same kernel: IMQ with
"sclmed", no standardisation), with the index sequences compared; then the wild bootstrap's two
forms (``wild_bootstrap(method="dense" | "jumps")``) on sign processes of several flip
probabilities (1/1200 is a 4-chain AR(1) rho = 0.99 run's, 1/120 an AR(1) rho = 0.9 run's),
with what ``"auto"`` picks and the largest relative difference of the replicates. Times are the
best of ``--repeat`` runs after one compiling call (one run for the bootstrap forms at
n >= 80000).

Run: ``.venv/bin/python benchmarks/diagnostic_speed.py`` (``--big`` adds n = 80000, d = 2: a
4 x 20000 pooled test, about 3 minutes).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import jax
import numpy as np

from numpyro_dsd import IMQ, Identity
from numpyro_dsd.mcmc.bootstrap import _jumps_cheaper, sign_process, wild_bootstrap
from numpyro_dsd.mcmc.diagnostic import diagnose_draws
from numpyro_dsd.mcmc.inputs import Draws
from numpyro_dsd.mcmc.prefix import prefix_ksd_squared
from numpyro_dsd.stein.engine import prepare
from numpyro_dsd.stein.thinning import thin_indices


def best(fn: Callable[[], object], repeat: int) -> float:
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def diagnostic_row(c: int, n: int, d: int, n_boot: int, repeat: int) -> str:
    x = jax.random.normal(jax.random.key(0), (c, n, d))
    draws = Draws(x, -x, None, ())
    kernel = IMQ(bandwidth="med").frozen(x.reshape(-1, d))
    sk = prepare(x[0], -x[0], kernel=kernel)
    pooled = prepare(x.reshape(-1, d), -x.reshape(-1, d), kernel=kernel)
    signs = sign_process(jax.random.key(1), n, n_boot, 0.1)
    pooled_signs = sign_process(jax.random.key(1), c * n, n_boot, 0.1)
    t_curve = best(lambda: prefix_ksd_squared(sk), repeat)
    t_chain = best(lambda: wild_bootstrap(sk, signs).pvalue, repeat)
    t_pooled = best(lambda: wild_bootstrap(pooled, pooled_signs).pvalue, repeat)
    t_all = best(lambda: diagnose_draws(draws, Identity(), num_bootstrap=n_boot).ksd.values, repeat)
    return (
        f"| {c} x {n} | {d} | {n_boot} | {c * t_curve:.2f} | {c * t_chain:.2f} | "
        f"{t_pooled:.2f} | {t_all:.2f} |"
    )


def thinning_row(n: int, d: int, m: int, repeat: int) -> str:
    from stein_thinning.thinning import thin

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)) * 1.1
    s = -x / 1.1**2 * 1.05
    ours = np.asarray(thin_indices(x, s, m, kernel=IMQ(bandwidth="sclmed")))
    t_ours = best(lambda: thin_indices(x, s, m, kernel=IMQ(bandwidth="sclmed")), repeat)
    start = time.perf_counter()
    theirs = thin(x, s, m, standardize=False, preconditioner="sclmed")
    t_theirs = time.perf_counter() - start
    same = "yes" if np.array_equal(ours, np.asarray(theirs)) else "no"
    return (
        f"| {n} | {d} | {m} | {t_ours:.3f} | {t_theirs:.3f} | {t_theirs / t_ours:.0f}x | {same} |"
    )


def bootstrap_form_row(n: int, d: int, flip_prob: float, n_boot: int, repeat: int) -> str:
    x = jax.random.normal(jax.random.key(0), (n, d))
    sk = prepare(x, -x, kernel=IMQ())
    signs = sign_process(jax.random.key(1), n, n_boot, flip_prob)
    res, times = {}, {}
    for method in ("dense", "jumps"):
        res[method] = wild_bootstrap(sk, signs, method=method).replicates
        times[method] = best(lambda m=method: wild_bootstrap(sk, signs, method=m).pvalue, repeat)
    w = np.concatenate([np.ones((n, 1), np.int8), np.asarray(signs)], axis=1)
    auto = "jumps" if _jumps_cheaper(w) else "dense"
    diff = float(np.max(np.abs(res["jumps"] - res["dense"])) / np.max(np.abs(res["dense"])))
    return (
        f"| {n} | {d} | 1/{1 / flip_prob:.0f} | {n_boot} | {times['dense']:.2f} | "
        f"{times['jumps']:.2f} | {times['dense'] / times['jumps']:.1f}x | {auto} | {diff:.1e} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--big", action="store_true", help="add n = 80000 to the bootstrap forms")
    args = parser.parse_args()
    dtype = "float64" if jax.config.read("jax_enable_x64") else "float32"
    print(f"{jax.devices()[0].platform}, {dtype}; seconds (best of {args.repeat})\n")
    print("| chains x n | d | n_boot | curves | chain tests | pooled test | diagnose_draws |")
    print("|---|---|---|---|---|---|---|")
    for c, n, d, n_boot in [(4, 1000, 10, 1000), (4, 2500, 10, 1000), (4, 5000, 10, 200)]:
        print(diagnostic_row(c, n, d, n_boot, args.repeat), flush=True)
    print("\n| n | d | m | ours | stein-thinning | ratio | same indices |")
    print("|---|---|---|---|---|---|---|")
    for n, d, m in [(2000, 5, 100), (10000, 10, 100)]:
        print(thinning_row(n, d, m, args.repeat), flush=True)
    print("\n| n | d | flip prob | n_boot | dense | jumps | dense / jumps | auto | max rel diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    sizes = [5000, 20000] + ([80000] if args.big else [])
    for n in sizes:
        for a in (1 / 1200, 1 / 300, 1 / 120):
            print(bootstrap_form_row(n, 2, a, 1000, args.repeat if n < 80000 else 1), flush=True)


if __name__ == "__main__":
    main()
