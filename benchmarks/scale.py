"""Scale: exact KSD up to n = 10^6 and Stein thinning of 10^5 draws (docs/benchmarks.md, "Scale").

Two parts, each measurement in a FRESH interpreter (``--one``), so that the child's peak
resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) belongs to that measurement alone:

``--part ksd``
    The exact squared KSD as a V-statistic,
    :math:`\\hat V = n^{-2}\\sum_{i,j} k^0(x_i, x_j)`, Langevin Stein kernel, the default kernel
    (``IMQ(bandwidth="med")``), d = 10, on :math:`x_i \\sim N(0, \\operatorname{diag}(\\sigma^2))`
    (:math:`\\sigma` geometric in [0.8, 1.25]) with the exact scores :math:`-x_i/\\sigma^2`, for
    n in (10^4, 10^5, 10^6) and float32 (``--n``, ``--dtype``). One pass over the pairs per size:
    the child first builds the Stein kernel (:func:`numpyro_dsd.stein.prepare`, its small
    programs compiled on first use) and compiles the blocked pair sum ahead of time for these
    shapes (``weighted_pair_sum.lower(...).compile()``: ``compile`` column), then times one
    complete public call ``ksd_squared(x, s)``, which reuses that executable (``warm`` column,
    compilation excluded). ``cold`` = first ``prepare`` + compile + warm: what a first call in a
    fresh process costs. pairs/s = :math:`n^2` / warm (the ordered pairs :math:`\\hat V` sums;
    the engine evaluates the upper tiles only, about half of them).
``--part thin``
    Greedy Stein thinning (:func:`numpyro_dsd.stein.thinning.thin_indices`, default kernel) of
    n = 10^5 draws (same data, d = 10) to m = 10^3 points in float32 and float64: the first
    call in a fresh process (cold, compilation included) and the best of 3 further calls (warm).
    Then, in float64, against stein-thinning's greedy ``thin(x, s, m, standardize=False,
    preconditioner="med")`` (the same algorithm and kernel; its own fresh process, with one
    BLAS thread by default, ``--peer-blas-threads``: its small products gain nothing from more
    and lose several-fold on a loaded machine): n = 10^4 -> 100 and n = 10^5 -> 10^3 (the latter
    skipped by ``--quick``), our warm time, theirs, the ratio, and whether the index sequences
    are identical.

Usage::

    .venv/bin/python benchmarks/scale.py --quick                    # about 1 min
    .venv/bin/python benchmarks/scale.py --part thin                # about 1.5 min
    taskset -c 1 .venv/bin/python benchmarks/scale.py --part ksd    # n = 10^6: ~8 min, one core
    .venv/bin/python benchmarks/scale.py --part ksd --n 10000 100000 --dtype float32 float64

Tables (Markdown) go to stdout, one progress line per measurement to stderr. Set
``NUMPYRO_DSD_NO_CACHE=1`` so no persistent compilation cache hides the compile times.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np

KSD_SIZES = (10_000, 100_000, 1_000_000)
QUICK_KSD_SIZES = (10_000, 100_000)
D = 10
THIN_N, THIN_M = 100_000, 1_000
PEER_SIZES = ((10_000, 100), (100_000, 1_000))
QUICK_PEER_SIZES = ((10_000, 100),)
TARGET_KSD_RSS_MB = 2048.0
TARGET_THIN_S = 30.0

Result = dict[str, Any]


# --- one measurement (runs in a fresh subprocess) ---------------------------------------------


def make_data(n: int, d: int, seed: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian draws with mildly anisotropic scales and their exact scores.

    Parameters
    ----------
    n, d : int
        Number of points and dimension.
    seed : int
        Base seed; the stream also depends on ``(n, d)``.
    dtype : str
        "float32" or "float64" (the draws are generated in float64 and then cast).

    Returns
    -------
    x, s : (n, d) arrays of ``dtype``
        :math:`x_i \\sim N(0, \\operatorname{diag}(\\sigma^2))`, :math:`\\sigma` spaced
        geometrically in [0.8, 1.25], and :math:`s_i = -x_i / \\sigma^2`.

    Examples
    --------
    >>> x, s = make_data(4, 2, 0, "float32")
    >>> x.shape, s.dtype.name
    ((4, 2), 'float32')
    """
    rng = np.random.default_rng([seed, n, d])
    scale = np.geomspace(0.8, 1.25, d)
    x = rng.standard_normal((n, d)) * scale
    return x.astype(dtype), (-x / scale**2).astype(dtype)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_seconds() -> float:
    """User plus system CPU time of this process so far, in seconds (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CompileClock:
    """Seconds XLA spent compiling the pair sum (``weighted_pair_sum``) since :meth:`reset`
    (JAX's backend-compile events): proves that a timed call reused the executable compiled
    ahead of time (0 s) rather than compiling it again."""

    def __init__(self) -> None:
        import jax

        self.seconds = 0.0
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event: str, duration: float, **kwargs: object) -> None:
        if event == "/jax/core/compile/backend_compile_duration" and "weighted_pair_sum" in str(
            kwargs.get("fun_name", "")
        ):
            self.seconds += duration

    def reset(self) -> None:
        self.seconds = 0.0


def compile_pair_sum(sk: Any, block: int) -> float:
    """Compile ``ksd_squared``'s pair sum for the prepared kernel ``sk`` ahead of time (the
    executable is cached and reused by the next call); the seconds it took."""
    import jax.numpy as jnp

    from numpyro_dsd.stein.engine import local_devices
    from numpyro_dsd.stein.tiling import weighted_pair_sum

    w = jnp.full((sk.n,), 1.0 / sk.n, dtype=sk.diag.dtype)
    start = time.perf_counter()
    weighted_pair_sum.lower(
        sk.tile_fn, sk.feats, sk.consts, sk.diag, w, block=block, devices=local_devices(None)
    ).compile()
    return time.perf_counter() - start


def _setup_jax(dtype: str) -> None:
    import jax

    jax.config.update("jax_enable_x64", dtype == "float64")


def measure_ksd(n: int, dtype: str, seed: int) -> Result:
    """One exact V-statistic at size n, one pass over the pairs (see the module docstring).

    Returns
    -------
    dict
        ``prepare_s`` (first :func:`~numpyro_dsd.stein.prepare`), ``compile_s`` (ahead-of-time
        compilation of the pair sum), ``warm_s`` (the public ``ksd_squared`` call, compiled),
        ``warm_cpu_s`` (its user + system CPU time), ``warm_compile_s`` (XLA compilation
        inside it: 0 unless the executable was not reused), ``cold_s`` (the three times' sum),
        ``ksd2``, ``rss_base_mb`` (after imports and data), ``rss_peak_mb``, ``block``,
        ``n_devices``.
    """
    _setup_jax(dtype)
    import jax
    import jax.numpy as jnp

    from numpyro_dsd import ksd_squared
    from numpyro_dsd.stein.engine import prepare, tile_size

    x, s = make_data(n, D, seed, dtype)
    xj, sj = jnp.asarray(x), jnp.asarray(s)
    del x, s
    rss_base = peak_rss_mb()
    start = time.perf_counter()
    sk = prepare(xj, sj)
    sk.diag.block_until_ready()
    prepare_s = time.perf_counter() - start
    block = tile_size(sk)
    compile_s = compile_pair_sum(sk, block)
    del sk
    clock = CompileClock()
    start, cpu = time.perf_counter(), cpu_seconds()
    value = float(ksd_squared(xj, sj).block_until_ready())
    warm_s, warm_cpu_s = time.perf_counter() - start, cpu_seconds() - cpu
    return {
        "prepare_s": prepare_s,
        "compile_s": compile_s,
        "warm_s": warm_s,
        "warm_cpu_s": warm_cpu_s,
        "warm_compile_s": clock.seconds,
        "cold_s": prepare_s + compile_s + warm_s,
        "ksd2": value,
        "rss_base_mb": rss_base,
        "rss_peak_mb": peak_rss_mb(),
        "block": block,
        "n_devices": len(jax.local_devices()),
    }


def measure_thin(n: int, m: int, dtype: str, seed: int, repeats: int) -> Result:
    """``thin_indices(x, s, m)`` (default kernel): the first call (cold) and the best of
    ``repeats`` further calls (warm); the indices and the thinned set's KSD."""
    _setup_jax(dtype)
    import jax.numpy as jnp

    from numpyro_dsd.stein.engine import prepare
    from numpyro_dsd.stein.thinning import greedy_stein, thin_indices, thinned_ksd

    x, s = make_data(n, D, seed, dtype)
    xj, sj = jnp.asarray(x), jnp.asarray(s)
    rss_base = peak_rss_mb()
    start = time.perf_counter()
    idx = np.asarray(thin_indices(xj, sj, m).block_until_ready())
    cold_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        thin_indices(xj, sj, m).block_until_ready()
        times.append(time.perf_counter() - start)
    _, gains = greedy_stein(prepare(xj, sj), m)
    return {
        "cold_s": cold_s,
        "warm_s": min(times),
        "times_s": times,
        "indices": idx.tolist(),
        "unique": int(np.unique(idx).size),
        "thinned_ksd": float(thinned_ksd(gains)),
        "rss_base_mb": rss_base,
        "rss_peak_mb": peak_rss_mb(),
    }


def measure_peer(n: int, m: int, seed: int) -> Result:
    """stein-thinning's greedy ``thin(x, s, m, standardize=False, preconditioner="med")``
    (numpy, float64; nothing to compile, timed once) on the draws of :func:`make_data`: the
    same algorithm and kernel as our default ``thin_indices``."""
    from stein_thinning.thinning import thin

    x, s = make_data(n, D, seed, "float64")
    start, cpu = time.perf_counter(), cpu_seconds()
    theirs = thin(x, s, m, standardize=False, preconditioner="med")
    peer_s, peer_cpu_s = time.perf_counter() - start, cpu_seconds() - cpu
    return {
        "peer_s": peer_s,
        "peer_cpu_s": peer_cpu_s,
        "indices": np.asarray(theirs).astype(np.int64).tolist(),
        "rss_peak_mb": peak_rss_mb(),
    }


def run_one(args: argparse.Namespace) -> None:
    """``--one`` mode: one measurement, printed as one JSON line."""
    n, dtype = args.n[0], args.dtype[0]
    if args.one == "ksd":
        res = measure_ksd(n, dtype, args.seed)
    elif args.one == "thin":
        res = measure_thin(n, args.m, dtype, args.seed, args.repeats)
    else:
        res = measure_peer(n, args.m, args.seed)
    res.update(kind=args.one, n=n, dtype=dtype, m=args.m)
    print(json.dumps(res), flush=True)


# --- driver ------------------------------------------------------------------------------------


def spawn(
    kind: str, n: int, dtype: str, args: argparse.Namespace, m: int = 0, env: dict | None = None
) -> Result:
    """Run one measurement in a fresh interpreter (same CPU affinity; the environment plus
    ``env``)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--one", kind, "--n", str(n)]
    cmd += ["--dtype", dtype, "--m", str(m), "--seed", str(args.seed)]
    cmd += ["--repeats", str(args.repeats)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, check=False, env={**os.environ, **(env or {})}
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def environment() -> list[str]:
    """Lines describing the software and the machine."""
    import jax

    devices = jax.local_devices()
    cores = len(os.sched_getaffinity(0))
    return [
        f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"python {platform.python_version()}, jax {jax.__version__}, "
        f"jaxlib {importlib.metadata.version('jaxlib')}, numpy {np.__version__}, "
        f"stein_thinning {importlib.metadata.version('stein_thinning')}",
        f"jax devices: {len(devices)} x {devices[0].platform} ({devices[0].device_kind})",
        f"CPUs: os.cpu_count() = {os.cpu_count()}, usable by this process = {cores}"
        f" ({sorted(os.sched_getaffinity(0))})",
        f"load average (1, 5, 15 min): {', '.join(f'{v:.2f}' for v in os.getloadavg())}",
        f"NUMPYRO_DSD_NO_CACHE = {os.environ.get('NUMPYRO_DSD_NO_CACHE', '')!r}, "
        f"XLA_FLAGS = {os.environ.get('XLA_FLAGS', '')!r}",
    ]


def ksd_part(args: argparse.Namespace) -> list[str]:
    """Exact KSD at each (n, dtype): one fresh process each; a Markdown table."""
    lines = [
        "| n | dtype | tile B | prepare (s) | compile (s) | warm (s) | warm CPU (s) | cold (s) "
        "| pairs/s (n²/warm) | KSD² | RSS base (MB) | RSS peak (MB) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    failures, notes = [], []
    for n in args.n:
        for dtype in args.dtype:
            r = spawn("ksd", n, dtype, args)
            log(
                f"  ksd n={n} {dtype}: warm {r['warm_s']:.4g} s, cold {r['cold_s']:.4g} s, "
                f"peak RSS {r['rss_peak_mb']:.0f} MB"
            )
            lines.append(
                f"| {n} | {dtype} | {r['block']} | {r['prepare_s']:.3g} | {r['compile_s']:.3g} "
                f"| {r['warm_s']:.4g} | {r['warm_cpu_s']:.4g} | {r['cold_s']:.4g} "
                f"| {n * n / r['warm_s']:.3e} "
                f"| {r['ksd2']:.4e} | {r['rss_base_mb']:.0f} | {r['rss_peak_mb']:.0f} |"
            )
            if r["warm_compile_s"] > 0:
                notes.append(
                    f"n={n} {dtype}: the warm call compiled for {r['warm_compile_s']:.3g} s "
                    "(not fully reused from the ahead-of-time compilation)"
                )
            if r["rss_peak_mb"] >= TARGET_KSD_RSS_MB:
                failures.append(f"ksd n={n} {dtype}: peak RSS {r['rss_peak_mb']:.0f} MB")
    return lines + [""] + [f"Note: {t}" for t in notes] + [f"FAIL {f}" for f in failures]


def thin_part(args: argparse.Namespace) -> list[str]:
    """Thinning 10^5 -> 10^3 in both dtypes, and against stein-thinning; Markdown tables."""
    lines = [
        "| n | m | dtype | cold (s) | warm (s) | distinct points | thinned KSD | RSS peak (MB) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    runs = {}
    failures = []
    for dtype in args.dtype_thin:
        r = runs[dtype] = spawn("thin", args.thin_n, dtype, args, m=args.thin_m)
        log(
            f"  thin {args.thin_n}->{args.thin_m} {dtype}: cold {r['cold_s']:.3g} s, warm "
            f"{r['warm_s']:.3g} s"
        )
        lines.append(
            f"| {args.thin_n} | {args.thin_m} | {dtype} | {r['cold_s']:.3g} | {r['warm_s']:.3g} "
            f"| {r['unique']} | {r['thinned_ksd']:.4g} | {r['rss_peak_mb']:.0f} |"
        )
        if r["cold_s"] > TARGET_THIN_S:
            failures.append(f"thin {dtype}: cold {r['cold_s']:.3g} s > {TARGET_THIN_S} s")
    if "float32" in runs and "float64" in runs:
        a, b = (np.asarray(runs[k]["indices"]) for k in ("float32", "float64"))
        agree = a == b
        prefix = int(np.argmin(agree)) if not agree.all() else len(a)
        lines += [
            "",
            f"float32 and float64 index sequences: first {prefix} of {len(a)} identical, "
            f"{int(np.isin(a, b).sum())} of the float32 picks also picked in float64.",
        ]
    threads = args.peer_blas_threads
    env = {"OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)} if threads else {}
    lines += [
        "",
        f"stein-thinning with {threads or 'the default number of'} BLAS thread(s):",
        "",
        "| n | m | ours f64 cold (s) | ours f64 warm (s) | stein-thinning (s) "
        "| stein-thinning CPU (s) | stein-thinning / ours warm | identical indices |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for n, m in QUICK_PEER_SIZES if args.quick else PEER_SIZES:
        if (n, m) == (args.thin_n, args.thin_m) and "float64" in runs:
            ours = runs["float64"]
        else:
            ours = spawn("thin", n, "float64", args, m=m)
        r = spawn("peer", n, "float64", args, m=m, env=env)
        log(f"  peer {n}->{m}: ours {ours['warm_s']:.3g} s, stein-thinning {r['peer_s']:.3g} s")
        agree = np.asarray(ours["indices"]) == np.asarray(r["indices"])
        same = "yes" if agree.all() else f"no (first {int(np.argmin(agree))} agree)"
        lines.append(
            f"| {n} | {m} | {ours['cold_s']:.3g} | {ours['warm_s']:.3g} | {r['peer_s']:.3g} "
            f"| {r['peer_cpu_s']:.3g} | {r['peer_s'] / ours['warm_s']:.1f}x | {same} |"
        )
        if not agree.all():
            failures.append(f"peer {n}->{m}: indices differ")
    return lines + [""] + [f"FAIL {f}" for f in failures]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("ksd", "thin", "all"), default="all")
    parser.add_argument("--n", type=int, nargs="+", default=None, help="KSD sizes")
    parser.add_argument("--dtype", nargs="+", default=None, help="KSD dtypes (float32)")
    parser.add_argument("--quick", action="store_true", help="n <= 10^5, small peer run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="warm thinning calls")
    parser.add_argument("--thin-n", type=int, default=THIN_N)
    parser.add_argument("--thin-m", type=int, default=THIN_M)
    parser.add_argument(
        "--peer-blas-threads",
        type=int,
        default=1,
        help="OPENBLAS_NUM_THREADS for stein-thinning (0: numpy's default)",
    )
    parser.add_argument("--one", choices=("ksd", "thin", "peer"), help=argparse.SUPPRESS)
    parser.add_argument("--m", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        run_one(args)
        return 0
    args.n = args.n or list(QUICK_KSD_SIZES if args.quick else KSD_SIZES)
    args.dtype_thin = ("float32", "float64")
    args.dtype = args.dtype or ["float32"]
    out = ["```", *environment(), "```", ""]
    if args.part in ("ksd", "all"):
        out += [f"Exact KSD (V-statistic, IMQ 'med', d = {D}):", "", *ksd_part(args)]
    if args.part in ("thin", "all"):
        out += [f"Stein thinning (default kernel, d = {D}):", "", *thin_part(args)]
    out.append(f"load average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("\n".join(out))
    return 1 if any(line.startswith("FAIL") for line in out) else 0


if __name__ == "__main__":
    sys.exit(main())
