"""Tile size sweep for ``ksd_squared`` (how the defaults in ``numpyro_dsd.stein`` were chosen).

Times the V-statistic (IMQ, ``bandwidth="med"``, identity diffusion) at n = 20,000 for
d in {2, 10, 50}, float64 and float32, and tile sizes B in {128, 256, 512, 1024}: best of three
steady-state calls after one compiling call. Also times the position-dependent path at
n = 5,000, d = 10 for B in {32, 64, 128}. Prints Markdown tables (seconds).

Usage::

    .venv/bin/python benchmarks/block_size.py
"""

from __future__ import annotations

import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from numpyro_dsd import IMQ, PositionDependent, ksd_squared  # noqa: E402

BLOCKS = (128, 256, 512, 1024)
GENERAL_BLOCKS = (32, 64, 128)


def best_time(fn, repeats: int = 3) -> float:
    """Best wall time of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def data(n: int, d: int, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(0).normal(size=(n, d))
    return x.astype(dtype), (-x).astype(dtype)


def time_block(x: np.ndarray, s: np.ndarray, block: int, kwargs: dict) -> float:
    return best_time(lambda: ksd_squared(x, s, block_size=block, **kwargs).block_until_ready())


def sweep(n: int, dims: tuple[int, ...], blocks: tuple[int, ...], **kwargs) -> None:
    print(f"| d | dtype | {' | '.join(f'B={b}' for b in blocks)} |")
    print(f"|---:|---|{'---:|' * len(blocks)}")
    for d in dims:
        for dtype in (np.float64, np.float32):
            x, s = data(n, d, dtype)
            row = [time_block(x, s, b, kwargs) for b in blocks]
            print(f"| {d} | {dtype.__name__} | {' | '.join(f'{t:.3f}' for t in row)} |")


def main() -> None:
    print(f"jax {jax.__version__}, {len(jax.local_devices())} device(s)\n")
    print("Constant M (identity), n = 20000, seconds:\n")
    sweep(20000, (2, 10, 50), BLOCKS, kernel=IMQ(bandwidth="med"))
    diffusion = PositionDependent(lambda p: jnp.eye(p.shape[0]) * (1.0 + 0.1 * jnp.tanh(p @ p)))
    print("\nPosition-dependent M, n = 5000, seconds:\n")
    sweep(5000, (10,), GENERAL_BLOCKS, kernel=IMQ(bandwidth="med"), diffusion=diffusion)


if __name__ == "__main__":
    main()
