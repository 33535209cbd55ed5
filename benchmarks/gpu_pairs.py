"""Stein-kernel pair throughput against the roofline, on whatever device JAX gives (CPU or GPU).

Runs unchanged on a CPU or a GPU machine (``jax.devices()[0]``; nothing beyond the package,
JAX and numpy). For float32 and float64, d in (10, 50) and a few n, it times the exact KSD
V-statistic :math:`\\hat V = n^{-2}\\sum_{i,j} k^0(x_i, x_j)` (``ksd_squared(x, s)``, Langevin
Stein kernel, default kernel ``IMQ(bandwidth="med")``, the engine's blocked pair sum) on
:math:`x_i \\sim N(0, \\operatorname{diag}(\\sigma^2))`, :math:`\\sigma` geometric in
[0.8, 1.25], with exact scores, and compares the throughput with the device's roofline.

**Timing.** The pair sum is compiled ahead of time for the shapes
(``weighted_pair_sum.lower(...).compile()``, "compile" column); then complete public calls are
timed (they reuse that executable): the best of up to ``--repeats`` calls within
``--time-budget`` seconds. A configuration whose estimated time (from the previous size's
throughput) exceeds ``--max-seconds`` is skipped.

**Pairs.** "pairs/s" is :math:`n^2` / time (the ordered pairs :math:`\\hat V` sums). The engine
evaluates the upper tiles only, :math:`N_e = \\tfrac12 n_b(n_b+1)B^2` kernel entries for
:math:`n_b = \\lceil n/B \\rceil` tiles of size B ("evaluated/s"); the roofline uses :math:`N_e`.

**Flops per evaluated pair** of the identity-diffusion, isotropic tile (``_LowRankTile`` in
``numpyro_dsd/stein/engine.py``, the default kernel's path) plus the weighted sum of
``numpyro_dsd/stein/tiling.py``:

.. math::
    F(d) = \\underbrace{2d + 4d + 2d}_{z z^\\top,\\ [z,g][g,z]^\\top,\\ b b^\\top}
    + \\underbrace{4 + 7 + 2 + 1 + 8 + 3}_{t,\\ \\mathrm{IMQ},\\ \\mathrm{cross},\\
      \\mathrm{quad},\\ k^0,\\ \\mathrm{mask}, w^\\top K w} = 8d + 25

(the IMQ profile with :math:`\\beta = -1/2` is one ``rsqrt``, counted as one flop). The
compute roofline is :math:`P / F(d)` evaluated pairs per second for a peak of P flop/s:
``--peak-gflops``, or by default the best of a large matrix product measured on the device in
the same run (the rate the tile's matrix products can reach). "fraction" = attained flop rate
:math:`F(d)\\,N_e/t` over the peak. The elementwise part (25 of the 105 flops at d = 10) runs
on vector units without fused multiply-adds, and on a CPU a (512, 512) tile stays in cache, so
the fraction is a rough guide: a value near or above 100% says the pair sum runs at the rate of
a large matrix product, not that the count is exact. Memory bandwidth is not modelled.

Usage::

    .venv/bin/python benchmarks/gpu_pairs.py                     # sizes chosen by backend
    .venv/bin/python benchmarks/gpu_pairs.py --n 4000 --d 10 --dtype float32
    .venv/bin/python benchmarks/gpu_pairs.py --block-size 512 2048 --max-seconds 120

Default sizes: CPU n in (4000, 16000); GPU n in (10^4, 10^5, 10^6) and tile sizes (package
default, 2048). On a GPU, float32 matrix products follow ``jax_default_matmul_precision``
(``--matmul-precision``; XLA's default may use TF32 there), printed with the environment.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scale import CompileClock, compile_pair_sum  # benchmarks/scale.py, beside this script

from numpyro_dsd import ksd_squared
from numpyro_dsd.stein.engine import prepare, tile_size

CPU_SIZES = (4_000, 16_000)
GPU_SIZES = (10_000, 100_000, 1_000_000)
GPU_BLOCKS = (None, 2048)  # None: the package's default tile size
DIMS = (10, 50)
DTYPES = ("float32", "float64")


def flops_per_pair(d: int) -> int:
    """Flops per evaluated pair of the isotropic identity-diffusion tile and the weighted sum.

    .. math:: F(d) = 8d + 25

    Examples
    --------
    >>> flops_per_pair(10)
    105
    """
    return 8 * d + 25


def evaluated_pairs(n: int, block: int) -> int:
    """Kernel entries the engine evaluates: the upper tiles of :math:`n_b = \\lceil n/B \\rceil`
    blocks, :math:`\\tfrac12 n_b(n_b+1)B^2` (padding included).

    Examples
    --------
    >>> evaluated_pairs(1000, 512)  # two blocks: three tiles
    786432
    """
    nb = -(-n // block)
    return nb * (nb + 1) // 2 * block * block


def best_time(fn: Callable[[], object], repeats: int, budget_s: float) -> float:
    """Best wall time of up to ``repeats`` calls of ``fn`` (at least one; no new call once the
    calls so far took ``budget_s``)."""
    times: list[float] = []
    while not times or (len(times) < repeats and sum(times) < budget_s):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak_gflops(dtype: str, size: int, repeats: int = 10) -> float:
    """Best rate of a (size, size) @ (size, size) product on the default device, GFLOP/s
    (:math:`2\\,\\text{size}^3` flops)."""
    key = jax.random.key(0)
    a = jax.random.normal(key, (size, size), dtype=dtype)
    b = jax.random.normal(jax.random.fold_in(key, 1), (size, size), dtype=dtype)
    f = jax.jit(jnp.matmul)
    jax.block_until_ready(f(a, b))
    return 2.0 * size**3 / best_time(lambda: f(a, b), repeats, 10.0) / 1e9


def make_data(n: int, d: int, dtype: str, seed: int = 0) -> tuple[jax.Array, jax.Array]:
    """Draws of N(0, diag(sigma^2)), sigma geometric in [0.8, 1.25], and their exact scores,
    as device arrays of ``dtype``."""
    rng = np.random.default_rng([seed, n, d])
    scale = np.geomspace(0.8, 1.25, d)
    x = rng.standard_normal((n, d)) * scale
    return jnp.asarray(x, dtype=dtype), jnp.asarray(-x / scale**2, dtype=dtype)


CLOCK: CompileClock | None = None


def measure(
    n: int, d: int, dtype: str, block: int | None, repeats: int, budget_s: float
) -> dict[str, float]:
    """Compile the pair sum ahead of time, then time complete ``ksd_squared`` calls."""
    x, s = make_data(n, d, dtype)
    sk = prepare(x, s)
    jax.block_until_ready(sk.diag)
    b = tile_size(sk, block)
    compile_s = compile_pair_sum(sk, b)
    del sk
    values: list[float] = []
    global CLOCK
    CLOCK = CLOCK or CompileClock()
    CLOCK.reset()

    def call() -> jax.Array:
        v = ksd_squared(x, s, block_size=b)
        values.append(v)
        return v

    seconds = best_time(call, repeats, budget_s)
    return {
        "block": b,
        "compile_s": compile_s,
        "time_s": seconds,
        "ksd2": float(values[-1]),
        "recompiled_s": CLOCK.seconds,
    }


def environment(device: jax.Device, precision: str) -> list[str]:
    """Lines describing the software and the device."""
    return [
        f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"python {platform.python_version()}, jax {jax.__version__}, numpy {np.__version__}",
        f"device: {device.platform} ({device.device_kind}), {len(jax.devices())} device(s); "
        f"CPUs usable: {len(os.sched_getaffinity(0))}",
        f"load average (1, 5, 15 min): {', '.join(f'{v:.2f}' for v in os.getloadavg())}",
        f"jax_default_matmul_precision = {precision!r}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", help="sizes (default: by backend)")
    parser.add_argument("--d", type=int, nargs="+", default=list(DIMS))
    parser.add_argument("--dtype", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument(
        "--block-size", type=int, nargs="+", help="tile sizes (default: by backend)"
    )
    parser.add_argument(
        "--peak-gflops",
        type=float,
        nargs="+",
        help="peak GFLOP/s, one per --dtype in order (default: measured)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--time-budget", type=float, default=20.0, help="s of timed calls")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="skip longer configs")
    parser.add_argument("--matmul-precision", default=None, help="jax_default_matmul_precision")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # float64 available; float32 inputs stay float32
    if args.matmul_precision:
        jax.config.update("jax_default_matmul_precision", args.matmul_precision)
    device = jax.devices()[0]
    gpu = device.platform != "cpu"
    sizes = args.n or list(GPU_SIZES if gpu else CPU_SIZES)
    blocks = args.block_size or list(GPU_BLOCKS if gpu else (None,))
    print("```")
    print("\n".join(environment(device, str(jax.config.jax_default_matmul_precision))))
    print("```\n")
    peaks = {}
    given = dict(zip(args.dtype, args.peak_gflops or [], strict=False))
    for dtype in args.dtype:
        gflops = given.get(dtype) or matmul_peak_gflops(dtype, 8192 if gpu else 2048)
        peaks[dtype] = gflops
        src = "given" if dtype in given else "measured: best (N, N) matrix product"
        print(f"- {dtype}: peak {gflops:.1f} GFLOP/s ({src})", flush=True)
    print(
        "\n| dtype | d | n | tile B | compile (s) | time (s) | pairs/s (n²) | evaluated/s "
        "| flops/pair | GFLOP/s | roofline (evaluated/s) | fraction of peak | KSD² |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    notes: list[str] = []
    for dtype in args.dtype:
        gflops = peaks[dtype]
        for d in args.d:
            f = flops_per_pair(d)
            roof = gflops * 1e9 / f
            for block in blocks:
                rate, b = None, 0  # evaluated pairs/s and tile size of the previous size
                for n in sorted(sizes):
                    estimate = None if rate is None else evaluated_pairs(n, b) / rate
                    if estimate is not None and estimate > args.max_seconds:
                        print(
                            f"| {dtype} | {d} | {n} | {b} | skipped: "
                            f"estimated {estimate:.3g} s > --max-seconds |",
                            flush=True,
                        )
                        continue
                    r = measure(n, d, dtype, block, args.repeats, args.time_budget)
                    b = r["block"]
                    ev = rate = evaluated_pairs(n, b) / r["time_s"]
                    print(
                        f"| {dtype} | {d} | {n} | {r['block']} | {r['compile_s']:.2f} "
                        f"| {r['time_s']:.4g} | {n * n / r['time_s']:.3e} | {ev:.3e} | {f} "
                        f"| {ev * f / 1e9:.1f} | {roof:.3e} "
                        f"| {ev * f / (gflops * 1e9):.1%} | {r['ksd2']:.4e} |",
                        flush=True,
                    )
                    if r["recompiled_s"] > 0:
                        notes.append(
                            f"{dtype} d={d} n={n}: the timed calls compiled for "
                            f"{r['recompiled_s']:.3g} s (ahead-of-time executable not reused)"
                        )
    for note in notes:
        print(f"\nNote: {note}")
    print(f"\nload average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
