"""The zoo: ``ksd_diagnostic`` verdicts on real NumPyro models and deliberately broken samplers.

Each case (``benchmarks/zoo_models.py``) samples with NumPyro NUTS, 4 chains x 1,000 draws after
1,000 warm-up (``chain_method="sequential"``, key ``jax.random.PRNGKey(seed)``) unless it says
otherwise, and the draws are diagnosed by :func:`numpyro_dsd.ksd_diagnostic` (key
``jax.random.key(seed)``) against the model named below, over ``--seeds`` seeds.

Real models (after NumPyro's ``examples/``; inline or fixed-seed synthetic data). Where NUTS
with its defaults diverges, the draws are not to be trusted and ``must`` is "not pass":

- ``eight_schools_centred``: theta ~ N(mu, tau), mu ~ N(0, 5), tau ~ HalfCauchy(5); NUTS
  diverges in the funnel of (tau, theta): not pass;
- ``eight_schools_noncentred``: theta = mu + tau theta_raw, diagnosed against the non-centred
  model (its own posterior): pass;
- ``baseball``: Efron-Morris, 18 players x 45 at-bats, ``partially_pooled_with_logit`` (centred
  logits, scale ~ HalfCauchy(1)); NUTS diverges: not pass;
- ``funnel``: y ~ N(0, 3), x ~ N(0, exp(y/2)) (9 dims), centred: NUTS misses the neck, not pass;
- ``horseshoe``: horseshoe regression, N = 50, P = 10, 3 non-zero coefficients, noise sd 0.05
  (d = 22; 500 warm-up, its trees are long); NUTS diverges, but whether the draws are biased
  is not known: reported, no requirement ("report");
- ``stochastic_volatility``: T = 100 synthetic returns, GaussianRandomWalk log-volatility
  (d = 102): pass;
- ``logistic``: covtype.py's logistic regression on synthetic data, N = 500, d = 10: pass.

Broken samplers on a small regression (beta in R^3, sigma ~ HalfNormal(2), N = 30), all
diagnosed against the untempered model with all the data:

- ``exact``: NUTS defaults: pass;
- ``stuck``: fixed step 1e-3, ``max_tree_depth=2`` (ESS < 10): not pass;
- ``burnin``: no warm-up, the step size and mass matrix of a good run (one chain, key 12345),
  every chain started 12 posterior sds away in every coordinate, the transient kept (NUTS
  crosses it in a few draws, which widen the sample's sds by a few per cent): not pass;
- ``tree_depth_1``: ``max_tree_depth=1``, exact but slow mixing: not fail;
- ``fixed_large_step``: 1.5x the adapted step size, not adapted (still MH-exact): pass;
- ``tempered``: the likelihood raised to 0.5 (``numpyro.handlers.scale``): fail;
- ``half_data``: the first half of the data sampled: fail.

The table gives, per case over seeds: the fraction of seeds whose largest rank-normalised split
R-hat (ArviZ, over every scalar of every site) exceeds 1.01, the median smallest bulk ESS, the
median divergence count, the fractions of pooled verdicts pass / fail / inconclusive, the
fraction of per-chain verdicts "fail", and the median ``ksd_ratio_pooled``. ``must`` is what a
sound diagnostic says ("not pass": fail or inconclusive; "not fail": pass or inconclusive;
"report": no requirement).
``--sample-only`` skips the verdicts (p-values instead), for diagnostics without them.

JAX's persistent compilation cache is switched on in a temporary directory: NumPyro compiles
every chain of a sequential run afresh (``fori_collect`` jits a new closure), and the cache makes
the repeats cheap. Those executables are never freed (about 1,600 memory maps per 4-chain run),
so after a few hundred runs the process hits ``vm.max_map_count`` and dies ("LLVM compilation
error: Cannot allocate memory", then a segfault); ``jax.clear_caches()`` frees them, called
whenever the process holds over 20,000 maps.

Run (20 seeds take about 25-30 minutes on 2 cores, a third of it the horseshoe)::

    .venv/bin/python benchmarks/zoo.py                       # 20 seeds, every case
    .venv/bin/python benchmarks/zoo.py --seeds 2 --cases exact tempered
    .venv/bin/python benchmarks/zoo.py --json                # also write docs/zoo.json
    .venv/bin/python benchmarks/zoo.py --sample-only --seeds 1
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from zoo_models import CASES, Case, Run  # benchmarks/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "docs" / "zoo.json"
RHAT_MAX = 1.01
VERDICTS = ("pass", "fail", "inconclusive")
MISSING = (
    "ksd_diagnostic returned no 'verdict_pooled' (this numpyro_dsd has no verdicts yet); "
    "run with --sample-only for R-hat, ESS and p-values."
)


def use_compilation_cache(path: str) -> None:
    """JAX's persistent compilation cache in ``path``, for every compiled function."""
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def convergence(draws: dict[str, np.ndarray]) -> dict[str, float]:
    """Largest rank-normalised split R-hat and smallest bulk ESS over every scalar of every site."""
    import arviz as az

    data = az.from_dict(posterior=draws)
    rhat = float(az.rhat(data).to_array().max())
    ess = float(az.ess(data, method="bulk").to_array().min())
    return {"rhat": rhat, "ess": ess}


def diagnose(run: Run, seed: int, diffusion: str, verdicts: bool) -> dict[str, Any]:
    """``ksd_diagnostic`` of one run: p-values, and the verdicts unless ``verdicts`` is False."""
    from numpyro_dsd import ksd_diagnostic

    ds = ksd_diagnostic(
        run.draws,
        run.model,
        run.model_args,
        run.model_kwargs,
        diffusion=diffusion,
        rng_key=jax.random.key(seed),
    )
    out = {
        "pvalue": ds["pvalue"].values.tolist(),
        "pvalue_pooled": float(ds["pvalue_pooled"]),
        "ksd_pooled": float(ds["ksd_pooled"]),
    }
    if not verdicts:
        return out
    if "verdict_pooled" not in ds:
        raise SystemExit(MISSING)
    return out | {
        "verdict": [str(v) for v in ds["verdict"].values],
        "verdict_pooled": str(ds["verdict_pooled"].values),
        "reason": [str(r) for r in ds["reason"].values],
        "reason_pooled": str(ds["reason_pooled"].values),
        "ksd_ratio_pooled": float(ds["ksd_ratio_pooled"]),
        "pvalue_moments": ds["pvalue_moments"].values.tolist(),
        "pvalue_moments_pooled": float(ds["pvalue_moments_pooled"]),
        "alpha": float(ds.attrs["alpha"]),
    }


def evaluate(case: Case, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Sample one seed of ``case``, then its convergence figures and the diagnostic."""
    start = time.perf_counter()
    run = case.run(seed)
    sampled = time.perf_counter()
    row = {"case": case.name, "seed": seed, "divergences": run.divergences}
    row |= convergence(run.draws)
    row |= diagnose(run, seed, args.diffusion, not args.sample_only)
    row["sample_s"] = sampled - start
    row["diagnose_s"] = time.perf_counter() - sampled
    return row


def progress(row: dict[str, Any]) -> None:
    """One line per run on stderr."""
    verdict = row.get("verdict_pooled", f"p={row['pvalue_pooled']:.3f}")
    print(
        f"  {row['case']} seed {row['seed']}: R-hat {row['rhat']:.3f}, ESS {row['ess']:.0f}, "
        f"div {row['divergences']}, pooled {verdict}, "
        f"{row['sample_s']:.1f} s + {row['diagnose_s']:.1f} s",
        file=sys.stderr,
        flush=True,
    )


def _fraction(values: list[bool]) -> str:
    return f"{np.mean(values):.2f}"


def _median(values: list[float], fmt: str = ".0f") -> str:
    return format(float(np.median(values)), fmt)


def summary(case: Case, rows: list[dict[str, Any]], sample_only: bool) -> list[str]:
    """One table row of ``case`` over its seeds."""
    cells = [
        f"`{case.name}`",
        case.what,
        case.must,
        str(len(rows)),
        _fraction([not r["rhat"] <= RHAT_MAX for r in rows]),  # NaN R-hat counts as > 1.01
        _median([r["ess"] for r in rows]),
        _median([r["divergences"] for r in rows]),
    ]
    if sample_only:
        pooled = [r["pvalue_pooled"] for r in rows]
        chains = np.concatenate([r["pvalue"] for r in rows])
        cells += [_median(pooled, ".3f"), _fraction(list(np.asarray(pooled) < 0.05))]
        cells.append(_fraction(list(chains < 0.05)))
    else:
        pooled = [r["verdict_pooled"] for r in rows]
        chains = [v for r in rows for v in r["verdict"]]
        cells.append(" / ".join(_fraction([p == v for p in pooled]) for v in VERDICTS))
        cells.append(_fraction([v == "fail" for v in chains]))
        cells.append(_median([r["ksd_ratio_pooled"] for r in rows], ".2f"))
    cells.append(_median([r["sample_s"] + r["diagnose_s"] for r in rows], ".1f"))
    return cells


def header(sample_only: bool) -> list[str]:
    """The table's column names."""
    head = ["case", "what it is", "must", "seeds", "R-hat > 1.01", "min ESS", "divergences"]
    if sample_only:
        tail = ["pooled p (median)", "pooled p < 0.05", "per-chain p < 0.05"]
    else:
        tail = ["KSD pooled: pass / fail / inconcl.", "per-chain fail", "ksd_ratio_pooled"]
    return head + tail + ["s/seed"]


def markdown(rows: list[list[str]], head: list[str]) -> str:
    """A markdown table."""
    lines = [head, ["---"] * len(head), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1 per case")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--diffusion", choices=["identity", "flow"], default="identity")
    parser.add_argument("--sample-only", action="store_true", help="p-values, no verdicts")
    parser.add_argument(
        "--json",
        nargs="?",
        const=str(DEFAULT_JSON),
        default=None,
        metavar="PATH",
        help=f"write the per-run rows as JSON (default path {DEFAULT_JSON.relative_to(ROOT)})",
    )
    return parser.parse_args(argv)


def write_json(path: str, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """The per-run rows and the settings, as JSON."""
    Path(path).write_text(json.dumps({"meta": meta, "runs": rows}, indent=1) + "\n")
    print(f"\nwrote {path}")


def free_executables(limit: int = 20_000) -> bool:
    """``jax.clear_caches()`` once the process holds over ``limit`` memory maps (always where
    ``/proc/self/maps`` cannot be read): NumPyro's leaked executables (see the docstring).
    Returns whether it cleared them (an ``MCMC`` object must then be built anew)."""
    try:
        with open("/proc/self/maps") as maps:
            count = sum(1 for _ in maps)
    except OSError:
        count = limit + 1
    if count > limit:
        jax.clear_caches()
    return count > limit


def run_cases(args: argparse.Namespace) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """Every selected case over every seed: the table rows and the per-run rows."""
    table, runs = [], []
    for name in args.cases:
        case = CASES[name]
        rows = []
        for seed in range(args.seeds):
            rows.append(evaluate(case, seed, args))
            progress(rows[-1])
            free_executables()
        table.append(summary(case, rows, args.sample_only))
        runs += rows
    return table, runs


def main(argv: list[str] | None = None) -> None:
    """Run the zoo and print the table."""
    args = parse_args(argv)
    start = time.perf_counter()
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    date = datetime.datetime.now().isoformat(timespec="seconds")
    print(f"`{command}`\n\n{date}; diffusion = {args.diffusion}, seeds 0..{args.seeds - 1}\n")
    with tempfile.TemporaryDirectory(prefix="zoo_jax_cache_") as cache:
        use_compilation_cache(cache)
        table, runs = run_cases(args)
    alpha = runs[0].get("alpha") if runs else None
    print(markdown(table, header(args.sample_only)))
    wall = time.perf_counter() - start
    level = "" if alpha is None else f"alpha = {alpha}; "
    print(f"\n{level}total wall time {wall / 60:.1f} min ({wall:.0f} s)")
    if args.json is not None:
        meta = {"command": command, "date": date, "diffusion": args.diffusion, "wall_s": wall}
        write_json(args.json, runs, meta | {"seeds": args.seeds, "alpha": alpha})


if __name__ == "__main__":
    main()
