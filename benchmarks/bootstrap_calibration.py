"""Wild-bootstrap KSD test: rejection rates under H0 and under bias (docs/benchmarks.md).

For each scenario, R replicate data sets (fixed seeds) are tested with
:func:`numpyro_dsd.mcmc.bootstrap.ksd_test`'s pipeline at level 0.05 and 0.01, and the rejection
rate is reported with its Monte Carlo standard error :math:`\\sqrt{r(1 - r)/R}`. The sign
process is varied over the memory factor :math:`\\kappa \\in \\{1, 2, 4, 8\\}` (``flip_prob =
"auto"``, :math:`a = \\min(1/2, 1/(2\\kappa\\tau))`) and the naive i.i.d. Rademacher signs
(``flip_prob = 0.5``). All sign settings of one replicate share the kernel pass: their sign
vectors are stacked into one :func:`~numpyro_dsd.mcmc.bootstrap.wild_bootstrap` call, each setting
with its own ``rng_key``; this is exactly ``ksd_test(x, s, kernel=IMQ(), num_bootstrap=N,
flip_prob=..., kappa=..., rng_key=...)`` per setting, only cheaper (checked on the first
replicate of every scenario).

Kernel: ``IMQ()`` (c = 1, beta = -1/2, no preconditioner), frozen, so no bandwidth is fitted
to the data being tested. Scenarios (d = 2 unless stated, stationary starts):

- null: exact i.i.d. N(0, I) draws (d = 2, 5); AR(1) chains on N(0, I) with rho in
  {0.5, 0.9, 0.95}; random-walk Metropolis on N(0, Sigma), Sigma = [[1, 0.8], [0.8, 1]],
  proposal 1.68 chol(Sigma) (acceptance about 0.35); 4 independent AR(1) rho = 0.9 chains
  pooled (``ksd_test`` on (4, n, d));
- power (scores of the true target at biased draws): AR(1) rho = 0.9 and RWM draws 20% too
  wide; AR(1) rho = 0.9 shifted by 0.3 sd in one coordinate; the unadjusted Langevin chain
  with step h = 0.5 on N(0, I), whose stationary law is N(0, I / (1 - h/4)) (sd 7% too wide).

Usage::

    .venv/bin/python benchmarks/bootstrap_calibration.py             # full run (~10 min)
    .venv/bin/python benchmarks/bootstrap_calibration.py --reps 50   # quick look
    .venv/bin/python benchmarks/bootstrap_calibration.py --large     # + rho = 0.99, n = 4000 rows
    .venv/bin/python benchmarks/bootstrap_calibration.py --only ar09 ula
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from numpyro_dsd.mcmc.bootstrap import chain_signs, ksd_test, memory_series, wild_bootstrap
from numpyro_dsd.stein.engine import prepare
from numpyro_dsd.stein.kernels import IMQ

KAPPAS = (1.0, 2.0, 4.0, 8.0)
LEVELS = (0.05, 0.01)
NULL_BAND = (0.02, 0.09)
RWM_COV = np.array([[1.0, 0.8], [0.8, 1.0]])
RWM_SCALE = 1.68  # 2.38 / sqrt(d): the optimal Gaussian RWM scale, acceptance about 0.35
ULA_STEP = 0.5
KERNEL = IMQ()  # c = 1, beta = -1/2, precond None: frozen
CORES = len(os.sched_getaffinity(0))

# A sign setting: (label, flip_prob, kappa)
Setting = tuple[str, float | str, float | str]


def make_settings(kappas: tuple[float | str, ...]) -> tuple[Setting, ...]:
    """``flip_prob="auto"`` for each kappa (a number or ``"auto"``, the default
    :func:`~numpyro_dsd.mcmc.bootstrap.memory_factor`), then i.i.d. signs (``flip_prob=0.5``)."""
    label = [f"kappa={k}" if isinstance(k, str) else f"kappa={k:g}" for k in kappas]
    return tuple(zip(label, ("auto",) * len(kappas), kappas, strict=True)) + (
        ("iid signs", 0.5, 1.0),
    )


def kappa_arg(text: str) -> float | str:
    """``--kappas`` entries: ``auto`` or a number."""
    return text if text == "auto" else float(text)


# --- data: R replicate chains at once, (R, chains, n, d) draws and scores ------------------------


def iid(rng: np.random.Generator, reps: int, chains: int, n: int, d: int) -> np.ndarray:
    return rng.standard_normal((reps, chains, n, d))


def ar1(rho: float) -> Callable[..., np.ndarray]:
    """:math:`x_t = \\rho x_{t-1} + \\sqrt{1 - \\rho^2}\\xi_t`, :math:`x_0 \\sim N(0, I)`."""

    def gen(rng: np.random.Generator, reps: int, chains: int, n: int, d: int) -> np.ndarray:
        eps = rng.standard_normal((n, reps, chains, d))
        x = np.empty_like(eps)
        x[0] = eps[0]
        c = np.sqrt(1.0 - rho**2)
        for t in range(1, n):
            x[t] = rho * x[t - 1] + c * eps[t]
        return np.moveaxis(x, 0, 2)

    return gen


def rwm(rng: np.random.Generator, reps: int, chains: int, n: int, d: int) -> np.ndarray:
    """Random-walk Metropolis on N(0, RWM_COV), started from the target."""
    assert d == 2
    chol = np.linalg.cholesky(RWM_COV)
    prec = np.linalg.inv(RWM_COV)
    x = np.empty((n, reps, chains, d))
    cur = rng.standard_normal((reps, chains, d)) @ chol.T
    accepted = 0
    for t in range(n):
        prop = cur + RWM_SCALE * rng.standard_normal((reps, chains, d)) @ chol.T
        log_ratio = -0.5 * (
            np.einsum("...i,ij,...j", prop, prec, prop) - np.einsum("...i,ij,...j", cur, prec, cur)
        )
        acc = np.log(rng.uniform(size=(reps, chains))) < log_ratio
        accepted += acc.sum()
        cur = np.where(acc[..., None], prop, cur)
        x[t] = cur
    rwm.acceptance = accepted / (n * reps * chains)  # type: ignore[attr-defined]
    return np.moveaxis(x, 0, 2)


def ula(rng: np.random.Generator, reps: int, chains: int, n: int, d: int) -> np.ndarray:
    """Unadjusted Langevin on N(0, I): :math:`x' = (1 - h/2) x + \\sqrt h \\xi`, started from
    its own stationary law N(0, I / (1 - h/4))."""
    h = ULA_STEP
    x = np.empty((n, reps, chains, d))
    cur = rng.standard_normal((reps, chains, d)) / np.sqrt(1.0 - h / 4.0)
    for t in range(n):
        cur = (1.0 - h / 2.0) * cur + np.sqrt(h) * rng.standard_normal((reps, chains, d))
        x[t] = cur
    return np.moveaxis(x, 0, 2)


def std_score(x: np.ndarray) -> np.ndarray:
    return -x


def rwm_score(x: np.ndarray) -> np.ndarray:
    return -x @ np.linalg.inv(RWM_COV)


def wide(x: np.ndarray) -> np.ndarray:
    return 1.2 * x


def shift(x: np.ndarray) -> np.ndarray:
    return x + 0.3 * (np.arange(x.shape[-1]) == 0)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    null: bool
    gen: Callable[..., np.ndarray]
    score: Callable[[np.ndarray], np.ndarray] = std_score
    bias: Callable[[np.ndarray], np.ndarray] | None = None
    n: int = 1000
    d: int = 2
    chains: int = 1
    large: bool = False  # only with --large


SCENARIOS = (
    Scenario("iid2", "i.i.d. N(0, I), d=2", True, iid),
    Scenario("iid5", "i.i.d. N(0, I), d=5", True, iid, d=5),
    Scenario("ar05", "AR(1) rho=0.5", True, ar1(0.5)),
    Scenario("ar09", "AR(1) rho=0.9", True, ar1(0.9)),
    Scenario("ar095", "AR(1) rho=0.95", True, ar1(0.95)),
    Scenario("ar099", "AR(1) rho=0.99", True, ar1(0.99), large=True),
    Scenario("ar099_n3k", "AR(1) rho=0.99", True, ar1(0.99), n=3000, large=True),
    Scenario("rwm", "RWM, correlated 2-d Gaussian", True, rwm, rwm_score),
    Scenario("pool", "4 AR(1) rho=0.9 chains pooled", True, ar1(0.9), n=500, chains=4),
    Scenario("ar09_wide", "AR(1) rho=0.9, 20% too wide", False, ar1(0.9), bias=wide),
    Scenario("rwm_wide", "RWM, 20% too wide", False, rwm, rwm_score, bias=wide),
    Scenario("ar09_shift", "AR(1) rho=0.9, mean +0.3 sd", False, ar1(0.9), bias=shift),
    Scenario("ula", f"ULA h={ULA_STEP} on N(0, I)", False, ula),
    Scenario("ar09_n4k", "AR(1) rho=0.9", True, ar1(0.9), n=4000, large=True),
    Scenario("ula_n4k", f"ULA h={ULA_STEP} on N(0, I)", False, ula, n=4000, large=True),
)


# --- one replicate: all sign settings in one kernel pass -----------------------------------------


def test_all_settings(
    x: np.ndarray, s: np.ndarray, key: jax.Array, n_boot: int, settings: tuple[Setting, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """p-values (len(settings),) and mean flip probabilities for chains x, s of shape (C, n, d).

    Setting i uses ``rng_key = jax.random.fold_in(key, i)``, as ``ksd_test`` would.
    """
    sk = prepare(x.reshape(-1, x.shape[-1]), s.reshape(-1, x.shape[-1]), kernel=KERNEL)
    series = memory_series(sk, x.reshape(-1, x.shape[-1])).reshape(*x.shape[:2], -1)
    signs, probs = [], []
    for i, (_, flip_prob, kappa) in enumerate(settings):
        w, a = chain_signs(jax.random.fold_in(key, i), series, n_boot, flip_prob, kappa)
        signs.append(w)
        probs.append(np.mean(a))
    res = wild_bootstrap(sk, jax.numpy.concatenate(signs, axis=1))
    reps = np.asarray(res.replicates).reshape(len(settings), n_boot)
    pvals = (1.0 + np.sum(reps >= float(res.statistic), axis=1)) / (1.0 + n_boot)
    return pvals, np.asarray(probs)


def check_against_ksd_test(
    x: np.ndarray,
    s: np.ndarray,
    key: jax.Array,
    n_boot: int,
    settings: tuple[Setting, ...],
    pvals: np.ndarray,
) -> None:
    """The stacked computation gives ``ksd_test``'s p-values (float32 rounding aside)."""
    for i, (label, flip_prob, kappa) in enumerate(settings):
        res = ksd_test(
            x,
            s,
            kernel=KERNEL,
            num_bootstrap=n_boot,
            flip_prob=flip_prob,
            kappa=kappa,
            rng_key=jax.random.fold_in(key, i),
        )
        if abs(float(res.pvalue) - pvals[i]) > 2.0 / (n_boot + 1):
            raise AssertionError(f"{label}: ksd_test p={float(res.pvalue)}, stacked p={pvals[i]}")


def run_scenario(
    sc: Scenario, reps: int, n_boot: int, seed: int, settings: tuple[Setting, ...]
) -> dict[str, Any]:
    rng = np.random.default_rng([seed, SCENARIOS.index(sc)])
    t0 = time.perf_counter()
    x = sc.gen(rng, reps, sc.chains, sc.n, sc.d)
    acceptance = getattr(sc.gen, "acceptance", None) if sc.gen is rwm else None
    if sc.bias is not None:
        x = sc.bias(x)
    s = sc.score(x)
    x, s = x.astype(np.float32), s.astype(np.float32)
    base = jax.random.key(seed)
    pvals = np.empty((reps, len(settings)))
    probs = np.empty((reps, len(settings)))
    for r in range(reps):
        key = jax.random.fold_in(base, r)
        pvals[r], probs[r] = test_all_settings(x[r], s[r], key, n_boot, settings)
        if r == 0:
            check_against_ksd_test(x[r], s[r], key, n_boot, settings, pvals[r])
    seconds = time.perf_counter() - t0
    rows = []
    for i, (label, _, _) in enumerate(settings):
        rates = {str(lv): float(np.mean(pvals[:, i] <= lv)) for lv in LEVELS}
        rows.append(
            {
                "setting": label,
                "flip_prob": float(np.mean(probs[:, i])),
                "rates": rates,
                "se": {k: float(np.sqrt(v * (1 - v) / reps)) for k, v in rates.items()},
            }
        )
    return {
        "name": sc.name,
        "description": sc.description,
        "null": sc.null,
        "n": sc.n,
        "d": sc.d,
        "chains": sc.chains,
        "reps": reps,
        "n_boot": n_boot,
        "acceptance": acceptance,
        "seconds": seconds,
        "settings": rows,
    }


# --- report ------------------------------------------------------------------------------------


def fmt_rate(row: dict[str, Any], level: float) -> str:
    return f"{row['rates'][str(level)]:.3f} ± {row['se'][str(level)]:.3f}"


def report(results: list[dict[str, Any]], settings: tuple[Setting, ...]) -> str:
    head = "| scenario | H0 | n x chains | " + " | ".join(lb for lb, _, _ in settings) + " |"
    sep = "|---|---|---|" + "---:|" * len(settings)
    tables = (
        ("Rejection rate at level 0.05 (± Monte Carlo SE):", lambda r: fmt_rate(r, 0.05)),
        ("Rejection rate at level 0.01:", lambda r: f"{r['rates']['0.01']:.3f}"),
        ("Mean flip probability a:", lambda r: f"{r['flip_prob']:.4f}"),
    )
    lines: list[str] = []
    for title, cell in tables:
        lines += ([""] if lines else []) + [title, "", head, sep]
        for res in results:
            cells = " | ".join(cell(r) for r in res["settings"])
            lines.append(
                f"| {res['description']} | {'yes' if res['null'] else 'no'} "
                f"| {res['n']} x {res['chains']} | {cells} |"
            )
    lo, hi = NULL_BAND
    nulls = [r for r in results if r["null"]]
    ok = [
        lb
        for i, (lb, _, _) in enumerate(settings)
        if nulls and all(lo <= r["settings"][i]["rates"]["0.05"] <= hi for r in nulls)
    ]
    lines += ["", f"Settings with every null row's 0.05-rate in [{lo}, {hi}]: {ok or 'none'}"]
    acc = [r["acceptance"] for r in results if r["acceptance"] is not None]
    if acc:
        lines.append(f"RWM acceptance rate: {', '.join(f'{a:.3f}' for a in acc)}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=200, help="replicate data sets per scenario")
    p.add_argument("--n-boot", type=int, default=300, help="bootstrap replicates per test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--kappas", type=kappa_arg, nargs="+", default=KAPPAS, help="memory factors to compare"
    )
    p.add_argument("--large", action="store_true", help="also the n = 4000 scenarios")
    p.add_argument("--only", nargs="+", metavar="NAME", help="scenario names to run")
    p.add_argument("--json", help="write the results to this file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = {sc.name for sc in SCENARIOS}
    if args.only and not set(args.only) <= names:
        raise SystemExit(f"unknown scenarios {set(args.only) - names}; choose from {names}")
    chosen = [
        sc
        for sc in SCENARIOS
        if (sc.name in args.only if args.only else (args.large or not sc.large))
    ]
    started = datetime.datetime.now(datetime.UTC)
    print(
        f"# {' '.join(sys.argv)}\n# {started:%Y-%m-%d %H:%M} UTC, {CORES} cores, "
        f"load average {os.getloadavg()[0]:.1f}, jax {jax.__version__}, float32",
        flush=True,
    )
    settings = make_settings(tuple(args.kappas))
    results = []
    for sc in chosen:
        res = run_scenario(sc, args.reps, args.n_boot, args.seed, settings)
        results.append(res)
        rates = ", ".join(
            f"{r['setting']}: {r['rates']['0.05']:.3f}/{r['rates']['0.01']:.3f}"
            for r in res["settings"]
        )
        print(f"{sc.name:12s} {res['seconds']:6.1f}s  {rates}", flush=True)
    print()
    print(report(results, settings))
    total = sum(r["seconds"] for r in results)
    print(f"\ntotal {total:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv, "started": str(started), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
