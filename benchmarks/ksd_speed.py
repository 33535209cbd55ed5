"""KSD speed: ``numpyro_dsd.ksd_squared`` against stein-thinning (docs/benchmarks.md).

Measures the V-statistic :math:`\\hat V = n^{-2}\\sum_{ij} k^0(x_i, x_j)` with the IMQ kernel and
the ``"med"`` preconditioner on Gaussian data with exact scores, for n in {1000, 5000, 20000}
and d in {2, 10, 50}:

- ours in float64 and float32 (``jax_enable_x64`` on; the dtype follows the inputs), steady
  state: one warm-up call (compilation), then the best of a few repeats;
- stein-thinning 0.2.0 in float64 (numpy, a Python loop over rows): ``stein.ksd`` on the
  integrand of ``thinning._make_stein_integrand(..., standardize=False, preconditioner="med")``;
  the last entry of its running sequence is :math:`\\sqrt{\\hat V}`;
- pairs per second, :math:`n^2 / \\text{time}`, the agreement of the two float64 values and the
  float32 error;
- the peak resident memory of every measurement, each run in a fresh subprocess (``--one``).

Then ours alone at n = 100,000, d = 10.

Usage::

    .venv/bin/python benchmarks/ksd_speed.py            # full run (stein-thinning takes long)
    .venv/bin/python benchmarks/ksd_speed.py --quick    # n in {1000, 5000}, d in {2, 10}
    .venv/bin/python benchmarks/ksd_speed.py --max-peer-seconds 120
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
from collections.abc import Callable
from typing import Any

import numpy as np

SIZES = (1000, 5000, 20000)
DIMS = (2, 10, 50)
QUICK_SIZES = (1000, 5000)
QUICK_DIMS = (2, 10)
LARGE_N, LARGE_D = 100_000, 10
AGREEMENT_TOL = 1e-8
TARGET_SPEEDUP = 20.0
TARGET_LARGE_SECONDS = 300.0
TARGET_LARGE_RSS_MB = 2048.0
CORES = len(os.sched_getaffinity(0))

Result = dict[str, Any]


# --- one measurement (runs in a fresh subprocess) ---------------------------------------------


def make_data(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian points with mildly anisotropic scales and their exact scores.

    Parameters
    ----------
    n, d : int
        Number of points and dimension.
    seed : int
        Base seed; the stream also depends on ``(n, d)``, so every configuration is fixed.

    Returns
    -------
    x, s : (n, d) float64 arrays
        :math:`x_i \\sim N(0, \\operatorname{diag}(\\sigma^2))` with :math:`\\sigma` spaced
        geometrically in [0.8, 1.25], and :math:`s_i = -x_i / \\sigma^2`.
    """
    rng = np.random.default_rng([seed, n, d])
    scale = np.geomspace(0.8, 1.25, d)
    x = rng.standard_normal((n, d)) * scale
    return x, -x / scale**2


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def best_time(fn: Callable[[], float], repeats: int, budget_s: float) -> tuple[float, list[float]]:
    """Best wall time of up to ``repeats`` calls of ``fn``.

    Parameters
    ----------
    fn : callable
        Does the work (blocking until it is done) and returns the value computed.
    repeats : int
        Maximum number of timed calls.
    budget_s : float
        No further call starts once the timed calls have taken this long in total (so slow
        configurations are timed once).

    Returns
    -------
    best : float
        Minimum over the timed calls, in seconds.
    times : list of float
        All timed calls.
    """
    times: list[float] = []
    while len(times) < repeats and sum(times) < budget_s:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), times


def timed(call: Callable[[], Any], warm_up: bool, repeats: int, budget_s: float) -> Result:
    """Time ``call`` (returning a scalar V-hat) and record the value and the peak RSS.

    Parameters
    ----------
    call : callable
        One complete computation of :math:`\\hat V`, blocking until done.
    warm_up : bool
        Make one untimed-in-the-best call first (compilation); otherwise the first timed call
        is the "first" time.
    repeats, budget_s
        See :func:`best_time`.

    Returns
    -------
    dict
        ``first_s``, ``time_s`` (best), ``times_s``, ``ksd2``, ``rss_base_mb``, ``rss_peak_mb``.
    """
    rss_base = peak_rss_mb()
    values: list[Any] = []

    def record() -> Any:
        values.append(call())
        return values[-1]

    first = None
    if warm_up:
        start = time.perf_counter()
        record()
        first = time.perf_counter() - start
    best, times = best_time(record, repeats, budget_s)
    return {
        "first_s": times[0] if first is None else first,
        "time_s": best,
        "times_s": times,
        "ksd2": float(values[-1]),
        "rss_base_mb": rss_base,
        "rss_peak_mb": peak_rss_mb(),
    }


def measure_ours(n: int, d: int, dtype: str, seed: int, repeats: int, budget_s: float) -> Result:
    """Time ``ksd_squared(x, s, kernel=IMQ(bandwidth="med"))`` (V-statistic) in ``dtype``, after
    one compiling call; ``dtype`` ("float64" or "float32") is that of the inputs and so of the
    computation. Data from :func:`make_data`; ``repeats``, ``budget_s`` as in :func:`best_time`.
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from numpyro_dsd import IMQ, ksd_squared

    x, s = make_data(n, d, seed)
    xj, sj = jnp.asarray(x, dtype=dtype), jnp.asarray(s, dtype=dtype)
    kernel = IMQ(bandwidth="med")
    res = timed(
        lambda: ksd_squared(xj, sj, kernel=kernel).block_until_ready(), True, repeats, budget_s
    )
    return {**res, "result_dtype": dtype, "n_devices": len(jax.local_devices())}


def measure_peer(n: int, d: int, seed: int, repeats: int, budget_s: float) -> Result:
    """Time stein-thinning's ``stein.ksd`` (float64 numpy) on the same data and kernel.

    The timed call builds the integrand (including the median preconditioner, as ours does)
    and runs the row loop; :math:`\\hat V` is the square of the last entry. No warm-up: there
    is nothing to compile.
    """
    from stein_thinning.stein import ksd
    from stein_thinning.thinning import _make_stein_integrand

    x, s = make_data(n, d, seed)

    def call() -> float:
        integrand = _make_stein_integrand(x, s, standardize=False, preconditioner="med")
        return float(ksd(integrand, n)[-1]) ** 2

    return {**timed(call, False, repeats, budget_s), "result_dtype": "float64"}


def run_one(args: argparse.Namespace) -> None:
    """``--one`` mode: measure one configuration and print it as one JSON line."""
    if args.one == "peer":
        res = measure_peer(args.n, args.d, args.seed, args.repeats, args.time_budget)
    else:
        res = measure_ours(args.n, args.d, args.dtype, args.seed, args.repeats, args.time_budget)
    res.update(impl=args.one, n=args.n, d=args.d, dtype=args.dtype)
    print(json.dumps(res), flush=True)


# --- driver ------------------------------------------------------------------------------------


def spawn(
    impl: str,
    n: int,
    d: int,
    dtype: str,
    args: argparse.Namespace,
    timeout: float | None = None,
    devices: int = 1,
) -> Result | None:
    """Run one measurement in a fresh interpreter; ``None`` if it ran past ``timeout`` seconds.

    ``devices > 1`` forces that many XLA host devices (``numpyro.set_host_device_count`` does
    the same), over which ``ksd_squared`` shards its tiles: one per core.
    """
    env = dict(os.environ)
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    cmd = [sys.executable, os.path.abspath(__file__), "--one", impl, "--n", str(n), "--d", str(d)]
    cmd += ["--dtype", dtype, "--seed", str(args.seed), "--repeats", str(args.repeats)]
    cmd += ["--time-budget", str(args.time_budget)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env
        )
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def progress(label: str, res: Result | None) -> None:
    """One line on stderr per finished measurement (the tables go to stdout)."""
    if res is None:
        print(f"  {label}: skipped (over --max-peer-seconds)", file=sys.stderr, flush=True)
        return
    print(
        f"  {label}: {res['time_s']:.4g} s (first {res['first_s']:.4g} s), "
        f"peak RSS {res['rss_peak_mb']:.0f} MB",
        file=sys.stderr,
        flush=True,
    )


def measure_config(n: int, d: int, args: argparse.Namespace, peer: bool) -> Result:
    """Ours in float64 and float32 and, if ``peer``, stein-thinning, for one (n, d)."""
    row: Result = {"n": n, "d": d}
    for key, dtype in (("f64", "float64"), ("f32", "float32")):
        row[key] = spawn("ours", n, d, dtype, args)
        progress(f"n={n} d={d} ours {dtype}", row[key])
    if CORES > 1:
        row["f64_cores"] = spawn("ours", n, d, "float64", args, devices=CORES)
        progress(f"n={n} d={d} ours float64 on {CORES} host devices", row["f64_cores"])
    if peer:
        row["peer"] = spawn("peer", n, d, "float64", args, timeout=args.max_peer_seconds)
        progress(f"n={n} d={d} stein-thinning float64", row["peer"])
    return row


def rel(a: float, b: float) -> float:
    """Relative difference :math:`|a - b| / |b|`."""
    return abs(a - b) / abs(b)


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (``"unknown"`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def git_state() -> str:
    """Commit of the checkout, with ``+ uncommitted changes`` when the package is modified."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*cmd: str) -> str:
        proc = subprocess.run(["git", "-C", root, *cmd], capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "numpyro_dsd")
    return head + (" + uncommitted changes in numpyro_dsd/" if dirty else "")


def environment() -> list[str]:
    """Lines describing the software and the machine."""
    import jax

    def version(pkg: str) -> str:
        return importlib.metadata.version(pkg)

    devices = jax.local_devices()
    return [
        f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"python {platform.python_version()}, jax {jax.__version__}, jaxlib {version('jaxlib')},"
        f" numpy {np.__version__}, stein_thinning {version('stein_thinning')}",
        f"numpyro_dsd: git {git_state()}",
        f"jax devices: {len(devices)} x {devices[0].platform} ({devices[0].device_kind})",
        f"CPUs: os.cpu_count() = {os.cpu_count()}, usable = {len(os.sched_getaffinity(0))},"
        f" model: {cpu_model()}",
        f"load average (1, 5, 15 min): {', '.join(f'{v:.2f}' for v in os.getloadavg())}",
        f"XLA_FLAGS = {os.environ.get('XLA_FLAGS', '')!r}",
    ]


def fmt(value: float | None, spec: str = ".3g") -> str:
    """Format a number for the tables; ``None`` prints as a dash."""
    return "-" if value is None else f"{value:{spec}}"


def pairs_per_s(res: Result | None, n: int) -> float | None:
    """:math:`n^2` / (best time), or ``None`` for a skipped measurement."""
    return None if res is None else n * n / res["time_s"]


def speed_table(rows: list[Result]) -> list[str]:
    """Markdown table of times, speed-ups, throughput and accuracy."""
    lines = [
        "| n | d | ours f64 (s) | ours f32 (s) | stein-thinning f64 (s) | speed-up f64 "
        f"| ours f64, {CORES} devices (s) | speed-up f64, {CORES} devices "
        "| ours f64 pairs/s | ours f32 pairs/s | stein-thinning pairs/s "
        "| KSD² (ours f64) | rel. diff vs stein-thinning (f64) | f32 rel. err |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        n, f64, f32, peer = r["n"], r["f64"], r["f32"], r.get("peer")
        cores = r.get("f64_cores")
        speedup = None if peer is None else peer["time_s"] / f64["time_s"]
        speedup_cores = None if peer is None or cores is None else peer["time_s"] / cores["time_s"]
        agree = None if peer is None else rel(f64["ksd2"], peer["ksd2"])
        lines.append(
            f"| {n} | {r['d']} | {fmt(f64['time_s'])} | {fmt(f32['time_s'])} "
            f"| {fmt(None if peer is None else peer['time_s'])} | {fmt(speedup, '.1f')} "
            f"| {fmt(None if cores is None else cores['time_s'])} | {fmt(speedup_cores, '.1f')} "
            f"| {fmt(pairs_per_s(f64, n), '.2e')} | {fmt(pairs_per_s(f32, n), '.2e')} "
            f"| {fmt(pairs_per_s(peer, n), '.2e')} | {f64['ksd2']:.3e} | {fmt(agree, '.1e')} "
            f"| {fmt(rel(f32['ksd2'], f64['ksd2']), '.1e')} |"
        )
    return lines


def memory_table(rows: list[Result]) -> list[str]:
    """Markdown table of baseline and peak RSS (MB) of every subprocess."""
    lines = [
        "| n | d | ours f64 base | ours f64 peak | ours f32 base | ours f32 peak "
        "| stein-thinning base | stein-thinning peak |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = []
        for key in ("f64", "f32", "peer"):
            res = r.get(key)
            for field in ("rss_base_mb", "rss_peak_mb"):
                cells.append(fmt(None if res is None else res[field], ".0f"))
        lines.append(f"| {r['n']} | {r['d']} | " + " | ".join(cells) + " |")
    return lines


def large_table(row: Result) -> list[str]:
    """Markdown table for ours alone at large n."""
    n, ref = row["n"], row["f64"]["ksd2"]
    lines = [
        "| n | d | dtype | first call (s) | steady (s) | pairs/s | KSD² | rel. err vs f64 "
        "| RSS base (MB) | RSS peak (MB) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in (("f64", "float64"), ("f32", "float32"), ("f64_cores", "float64, all")):
        res = row.get(key)
        if res is None:
            continue
        err = None if key == "f64" else rel(res["ksd2"], ref)
        dtype = f"{label} ({res['n_devices']} device(s))"
        lines.append(
            f"| {n} | {row['d']} | {dtype} | {fmt(res['first_s'])} | {fmt(res['time_s'])} "
            f"| {fmt(pairs_per_s(res, n), '.2e')} | {res['ksd2']:.3e} | {fmt(err, '.1e')} "
            f"| {res['rss_base_mb']:.0f} | {res['rss_peak_mb']:.0f} |"
        )
    return lines


def agreement_failures(rows: list[Result]) -> list[str]:
    """Configurations where ours and stein-thinning differ by ``AGREEMENT_TOL`` or more."""
    return [
        f"n={r['n']} d={r['d']}: rel. diff {rel(r['f64']['ksd2'], r['peer']['ksd2']):.2e}"
        for r in rows
        if r.get("peer") is not None and rel(r["f64"]["ksd2"], r["peer"]["ksd2"]) >= AGREEMENT_TOL
    ]


def verdict(ok: bool) -> str:
    """``"PASS"`` or ``"FAIL"``."""
    return "PASS" if ok else "FAIL"


def acceptance(rows: list[Result], large: Result | None) -> list[str]:
    """Summary lines for the acceptance targets that this run measured."""
    lines = []
    for r in rows:
        if r["n"] == 20000 and r["d"] == 10 and r.get("peer") is not None:
            ours, peer = r["f64"]["time_s"], r["peer"]["time_s"]
            lines.append(
                f"- n=20000, d=10, float64: ours {ours:.3g} s, stein-thinning {peer:.3g} s, "
                f"speed-up {peer / ours:.1f}x (target >= {TARGET_SPEEDUP:.0f}x): "
                f"{verdict(peer / ours >= TARGET_SPEEDUP)}"
            )
    if large is not None:
        for key in ("f64", "f32"):
            res = large[key]
            worst = max(res["first_s"], res["time_s"])
            ok = worst < TARGET_LARGE_SECONDS and res["rss_peak_mb"] < TARGET_LARGE_RSS_MB
            lines.append(
                f"- n={large['n']}, d={large['d']}, {res['dtype']}: first call {res['first_s']:.3g}"
                f" s, steady {res['time_s']:.3g} s (target < {TARGET_LARGE_SECONDS:.0f} s), "
                f"peak RSS {res['rss_peak_mb']:.0f} MB (target < {TARGET_LARGE_RSS_MB:.0f} MB):"
                f" {verdict(ok)}"
            )
    return lines


def run_all(args: argparse.Namespace) -> int:
    """Driver: every configuration in its own subprocess, then the tables."""
    sizes, dims = (QUICK_SIZES, QUICK_DIMS) if args.quick else (SIZES, DIMS)
    large_n = args.large_n if args.large_n is not None else (0 if args.quick else LARGE_N)
    print("## Environment\n\n```\n" + "\n".join(environment()) + "\n```\n", flush=True)
    rows = [measure_config(n, d, args, peer=True) for n in sizes for d in dims]
    large = measure_config(large_n, LARGE_D, args, peer=False) if large_n else None
    print("## Time and accuracy (V-statistic, IMQ, bandwidth='med')\n")
    print("\n".join(speed_table(rows)) + "\n")
    print("## Peak resident memory (MB, one fresh process per measurement)\n")
    print("\n".join(memory_table(rows)) + "\n")
    if large is not None:
        print(f"## Large n (ours only; d={LARGE_D})\n")
        print("\n".join(large_table(large)) + "\n")
    print("## Acceptance\n")
    print("\n".join(acceptance(rows, large)) or "(no acceptance configuration measured)")
    failures = agreement_failures(rows)
    print(
        f"- agreement with stein-thinning (rel. diff < {AGREEMENT_TOL:g}) in every measured "
        f"configuration: {verdict(not failures)}"
    )
    for line in failures:
        print(f"  - {line}")
    print(f"\nload average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 1 if failures else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--one``, ``--n``, ``--d``, ``--dtype`` are for the subprocesses)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="n in {1000, 5000}, d in {2, 10}")
    p.add_argument(
        "--max-peer-seconds",
        type=float,
        default=None,
        help="kill a stein-thinning measurement after this long (default: no cap)",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed calls after warm-up (max)")
    p.add_argument(
        "--time-budget",
        type=float,
        default=30.0,
        help="start no further timed call once the timed calls took this long (s)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--large-n",
        type=int,
        default=None,
        help=f"n of the ours-only run at d={LARGE_D} (default {LARGE_N}; 0 skips; --quick: 0)",
    )
    p.add_argument("--one", choices=("ours", "peer"), help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--d", type=int, help=argparse.SUPPRESS)
    p.add_argument(
        "--dtype", choices=("float64", "float32"), default="float64", help=argparse.SUPPRESS
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run one measurement (``--one``) or the whole benchmark; return the exit status."""
    args = parse_args(argv)
    if args.one:
        run_one(args)
        return 0
    return run_all(args)


if __name__ == "__main__":
    sys.exit(main())
