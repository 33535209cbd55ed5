"""Nyström KSD against the exact V-statistic: error and time against the number of inducing
points m (issue 19; docs/scale.md, "Near-linear KSD"; docs/benchmarks.md).

For each case (draws and the scores of N(0, I), d = 10) the exact :math:`\\hat V` is computed
once; the Nyström estimate (:func:`numpyro_dsd.stein.nystrom.nystrom_squared`, exact diagonal)
and the projection alone are computed for ``--seeds`` inducing sets, and the table prints the
median and range of the relative error of the KSD (the root) and the time of one
``ksd_squared(x, s, estimator="nystrom", num_inducing=m)`` call (after a warm-up call) against
``ksd_squared(x, s)``, in the same run.

    python benchmarks/nystrom.py --n 100000 --seeds 10
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np


def cases(n: int, d: int, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    t5 = rng.standard_t(5, (n, d)) / np.sqrt(5 / 3)
    ar = ar1_chain(rng, n, d)
    return {
        "i.i.d. N(0, I)": (x, -x),
        "AR(1) 0.9 of N(0, I)": (ar, -ar),
        "scale 1.1": (1.1 * x, -1.1 * x),
        "Student-t(5) draws": (t5, -t5),
    }


def timed(fn, *args):
    jax.block_until_ready(fn(*args))  # warm-up: compile
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=10)
    parser.add_argument("--m", default="default", help="comma-separated m, or 'default'")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--float32", action="store_true")
    parser.add_argument(
        "--diagnostic",
        metavar="CHAINS",
        type=int,
        help="instead: time ksd_diagnostic(estimator='nystrom') on CHAINS AR(1) 0.9 chains of n",
    )
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", not args.float32)
    if args.diagnostic:
        return time_diagnostic(args.diagnostic, args.n, args.d)
    from numpyro_dsd.stein.engine import prepare
    from numpyro_dsd.stein.ksd import ksd_squared
    from numpyro_dsd.stein.nystrom import default_num_inducing

    n = args.n
    ms = [default_num_inducing(n)] if args.m == "default" else [int(a) for a in args.m.split(",")]
    print(
        f"n = {n}, d = {args.d}, {'float32' if args.float32 else 'float64'}, "
        f"{jax.device_count()} {jax.default_backend()} device(s), {args.seeds} seeds"
    )
    print(
        "| case | KSD (exact) | m | error, exact diagonal: median [min, max] | "
        "error, projection alone | time exact | time Nyström | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|")
    w = jnp.full(n, 1.0 / n)
    for name, (x, s) in cases(n, args.d).items():
        exact, t_exact = timed(ksd_squared, x, s)
        sk = prepare(x, s)
        for m in ms:
            _, t_ny = timed(nystrom_call, x, s, m)
            vals = np.array(
                [[float(v) for v in estimates(sk, seed, m, w)] for seed in range(args.seeds)]
            )
            rel = np.sqrt(np.maximum(vals, 0) / float(exact)) - 1
            print(
                f"| {name} | {np.sqrt(float(exact)):.4f} | {m} | {np.median(rel[:, 0]):+.2%} "
                f"[{rel[:, 0].min():+.2%}, {rel[:, 0].max():+.2%}] | "
                f"{np.median(rel[:, 1]):+.2%} | {t_exact:.2f} s | {t_ny:.3f} s | "
                f"{t_exact / t_ny:.0f}x |",
                flush=True,
            )


def nystrom_call(x: np.ndarray, s: np.ndarray, m: int) -> jax.Array:
    """The timed call: what ``ksd_squared(..., estimator="exact")`` is timed against."""
    from numpyro_dsd.stein.ksd import ksd_squared

    return ksd_squared(x, s, estimator="nystrom", num_inducing=m)


def time_diagnostic(chains: int, n: int, d: int) -> None:
    """One ``ksd_diagnostic(..., estimator="nystrom")`` of ``chains`` AR(1) rho = 0.9 chains of
    N(0, I) (n draws each, d coordinates, scores given through ``stein_inputs``), timed cold."""
    import numpyro
    import numpyro.distributions as dist

    from numpyro_dsd import ksd_diagnostic

    def model() -> None:
        numpyro.sample("x", dist.Normal(0.0, 1.0).expand([d]).to_event(1))

    rng = np.random.default_rng(0)
    x = np.stack([ar1_chain(rng, n, d) for _ in range(chains)])
    t = time.perf_counter()
    ds = ksd_diagnostic({"x": x}, model, estimator="nystrom", progress_bar=False)
    print(
        f"ksd_diagnostic(estimator='nystrom'), {chains} x {n} draws, d = {d}, "
        f"m = {ds.attrs['num_inducing']} per chain, {ds.attrs['num_inducing_pooled']} pooled, "
        f"{ds.attrs['num_bootstrap']} bootstrap replicates: {time.perf_counter() - t:.1f} s; "
        f"verdicts {list(ds.verdict.values)}, pooled {ds.verdict_pooled.values}"
    )


def ar1_chain(rng: np.random.Generator, n: int, d: int, rho: float = 0.9) -> np.ndarray:
    x, e = np.zeros((n, d)), rng.standard_normal((n, d))
    for i in range(1, n):
        x[i] = rho * x[i - 1] + np.sqrt(1 - rho**2) * e[i]
    return x


def estimates(sk, seed: int, m: int, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(Nyström estimate with the exact diagonal, the projection alone) for one inducing set."""
    from numpyro_dsd.stein.nystrom import (
        inducing_matvec,
        nystrom,
        nystrom_squared,
        projected_quadratic,
    )

    ny = nystrom(sk, jax.random.key(seed), m)
    proj = projected_quadratic(ny, inducing_matvec(sk, ny.indices, w[:, None]))[0]
    return nystrom_squared(sk, ny, w), proj


if __name__ == "__main__":
    main()
