"""Validation on six real posteriors (posteriordb): the KSD diagnostic, NUTS and SVGD.

For each posterior of :mod:`numpyro_dsd.datasets.posteriordb` (reference draws: 10 chains x
1,000 from long Stan runs):

1. **Diagnostic.** :func:`numpyro_dsd.ksd_diagnostic` (default IMQ kernel, wild bootstrap with
   1,000 replicates, key 0) with the identity diffusion and the flow diffusion (one NeuTra flow
   per posterior, ``fit_flow``'s defaults, reused for every row) on the reference
   draws and on perturbed copies (:func:`numpyro_dsd.datasets.posteriordb.perturb`: every chain
   widened by 20%; shifted by 0.3 sd in coordinate j; its upper 10% tail of coordinate j
   removed; j runs over every coordinate), with the largest rank-normalised split R-hat and the
   smallest bulk ESS (ArviZ, over the flat unconstrained coordinates) beside each row.
2. **NUTS.** NumPyro NUTS, 10 chains x 1,000 draws after 1,000 warm-up (``target_accept_prob``
   0.8 except 0.95 for eight schools as in posteriordb), key 1; the same diagnostic of its draws.
3. **SVGD.** The same number of particles and steps, ``optax.adagrad(0.1)``, key 2, for: ours
   default (``SVGD(model, optax.adagrad(0.1))``: noisy steps in the latent space of a NeuTra
   flow fitted as ``SVGD`` fits it, :func:`numpyro_dsd.svgd.infer.default_flow_fit`, then 100
   finish steps), the same without the finish, and deterministic SVGD: ours plain (RBF kernel,
   no preconditioner), constant preconditioner (``init_rounds=20``), flow preconditioner, flow
   + linear kernel term (``linear_weight=1``), and NumPyro's own ``SVGD`` (``RBFKernel``, the
   same optimizer through ``optax_to_numpyro``, from ours' initial draw uniform on [-2, 2]^d in
   unconstrained space). Errors are in reference-sd units per flat
   unconstrained coordinate (the space every method moves in): the largest
   :math:`|\\bar x_j - \\bar x^{ref}_j| / s^{ref}_j` and the largest
   :math:`|s_j / s^{ref}_j - 1|`; the constrained-space maxima are reported too. The KSD is
   :func:`numpyro_dsd.ksd` with the IMQ kernel frozen on the reference draws (identity
   diffusion), so rows are comparable; ``N reference draws`` are N draws picked at random from the
   reference, the Monte Carlo yardstick.

The tables go to stdout and replace the generated part of ``docs/validation.md``; the figure is
``docs/figures/validation.png``; raw numbers ``docs/validation.json``.

Usage::

    .venv/bin/python benchmarks/posteriordb.py              # everything (about 30 minutes)
    .venv/bin/python benchmarks/posteriordb.py --quick      # 2 posteriors, small budgets
    .venv/bin/python benchmarks/posteriordb.py --only svgd --posteriors arK-arK
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import re
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "validation.md"
FIGURE = ROOT / "docs" / "figures" / "validation.png"
RAW = ROOT / "docs" / "validation.json"
BEGIN, END = "<!-- BEGIN GENERATED: benchmarks/posteriordb.py -->", "<!-- END GENERATED -->"
CORES = len(os.sched_getaffinity(0))
PARTICLES = 200
STEPS = 2000
STEP_SIZE = 0.1
MEAN_TOL, SD_TOL = 0.1, 0.15
FLOW_FIT: dict = {}  # fit_flow's defaults (its mean-field start serves every posterior here)
TARGET_ACCEPT = {"eight_schools-eight_schools_noncentered": 0.95}


# --- helpers ----------------------------------------------------------------------------------


def flat(p: Any, draws: dict[str, Any]) -> Any:
    """Flat unconstrained draws and scores (``ModelDraws``) of constrained ``draws``."""
    from numpyro_dsd.model.targets import model_draws

    return model_draws(p.model, draws, model_kwargs=p.model_kwargs)


def rhat_ess(x: np.ndarray) -> tuple[float, float]:
    """Largest rank-normalised split R-hat and smallest bulk ESS over the coordinates."""
    import arviz as az

    ds = az.convert_to_dataset({"x": np.asarray(x, dtype=np.float64)})
    return float(az.rhat(ds)["x"].max()), float(az.ess(ds, method="bulk")["x"].min())


def coordinate_names(p: Any) -> list[str]:
    """Names of the flat unconstrained coordinates (sites sorted, as ``model_draws`` ravels)."""
    names = []
    for site in sorted(p.draws):
        shape = p.draws[site].shape[2:]
        if shape:
            names += [f"{site}[{i + 1}]" for i in range(int(np.prod(shape)))]
        else:
            names.append(site)
    return names


# --- 1. the diagnostic on reference and perturbed draws ---------------------------------------


def flow_diffusion(p: Any) -> Any:
    from numpyro_dsd.mcmc.inputs import resolve_diffusion, resolve_draws

    draws = resolve_draws(p.draws, p.model, (), p.model_kwargs)
    return resolve_diffusion("flow", draws, rng_key=jax.random.key(0), flow_kwargs=FLOW_FIT)


def diagnose(p: Any, draws: dict[str, Any], flow: Any) -> dict[str, float]:
    from numpyro_dsd import ksd_diagnostic

    row: dict[str, float] = {}
    row["rhat"], row["ess"] = rhat_ess(flat(p, draws).x)
    for label, diffusion in (("identity", "identity"), ("flow", flow)):
        ds = ksd_diagnostic(
            draws, p.model, model_kwargs=p.model_kwargs, diffusion=diffusion,
            rng_key=jax.random.key(0),
        )  # fmt: skip
        row[f"ksd_{label}"] = float(ds.ksd_pooled)
        row[f"p_{label}"] = float(ds.pvalue_pooled)
        row[f"verdict_{label}"] = str(ds.verdict_pooled.values)
    return row


def diagnostic_rows(p: Any, quick: bool) -> list[dict[str, Any]]:
    from numpyro_dsd.datasets.posteriordb import perturb

    t0 = time.perf_counter()
    flow = flow_diffusion(p)
    print(f"  flow fitted in {time.perf_counter() - t0:.0f} s", flush=True)
    names = coordinate_names(p)
    coords = range(1 if quick else len(names))
    cases = [("reference", None, None), ("widen 20%", "widen", None)]
    cases += [(f"shift 0.3 sd {names[j]}", "shift", j) for j in coords]
    cases += [(f"drop top 10% {names[j]}", "truncate", j) for j in coords]
    rows = []
    for label, kind, j in cases:
        draws = p.draws if kind is None else perturb(p, kind, 0 if j is None else j)
        row = {"case": label, "kind": kind or "reference", **diagnose(p, draws, flow)}
        rows.append(row)
        print(f"  {label:32s} " + _line(row), flush=True)
    return rows


def _line(row: dict[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in row.items() if k not in ("case", "kind"))


# --- 2. NUTS ---------------------------------------------------------------------------------


def nuts_row(p: Any, quick: bool) -> dict[str, Any]:
    from numpyro.infer import MCMC, NUTS

    chains, n = (4, 500) if quick else (10, 1000)
    kernel = NUTS(p.model, target_accept_prob=TARGET_ACCEPT.get(p.name, 0.8))
    mcmc = MCMC(
        kernel, num_warmup=n, num_samples=n, num_chains=chains, chain_method="sequential",
        progress_bar=False,
    )  # fmt: skip
    t0 = time.perf_counter()
    mcmc.run(jax.random.key(1), **p.model_kwargs, extra_fields=("diverging",))
    seconds = time.perf_counter() - t0
    draws = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    draws = {k: v for k, v in draws.items() if k in p.draws}
    row = {"case": f"NUTS {chains}x{n}", "kind": "nuts", **diagnose(p, draws, flow_diffusion(p))}
    row["divergences"] = int(np.sum(mcmc.get_extra_fields()["diverging"]))
    row["seconds"] = seconds
    print(f"  {row['case']:32s} " + _line(row), flush=True)
    return row


# --- 3. SVGD ---------------------------------------------------------------------------------


def svgd_rows(p: Any, steps: int, particles: int) -> list[dict[str, Any]]:
    ref = flat(p, p.draws)
    ref_x = np.asarray(ref.x, np.float64).reshape(-1, ref.x.shape[-1])
    ref_c = _constrained_matrix(p.draws, 2)
    key = jax.random.key(2)
    from numpyro_dsd import IMQ

    kernel = IMQ(bandwidth="med").frozen(jnp.asarray(ref_x))
    rows = []
    from numpyro_dsd import ConstantPreconditioner

    deterministic = {"noise_step": None, "linear_weight": 0.0}
    constant = ConstantPreconditioner(init_rounds=20)
    configs = [
        ("ours, default", {}),
        ("ours, default, full finish", {"finish_moments": "full"}),
        ("ours, default, diagonal finish", {"finish_moments": "diagonal"}),
        ("ours, noisy flow, no finish", {"finish_steps": 0}),
        ("ours, plain", {"preconditioner": None, **deterministic}),
        ("ours, constant", {"preconditioner": constant, **deterministic}),
        ("ours, flow", deterministic),
        ("ours, flow + linear", {"noise_step": None, "linear_weight": 1.0}),
    ]  # fmt: skip
    for label, kwargs in configs:
        t0 = time.perf_counter()
        draws, note = run_ours(p, kwargs, key, steps, particles)
        rows.append(_svgd_row(p, label, draws, ref_x, ref_c, kernel, t0, note))
    t0 = time.perf_counter()
    draws, note = run_numpyro(p, key, steps, particles)
    rows.append(_svgd_row(p, "NumPyro SVGD", draws, ref_x, ref_c, kernel, t0, note))
    pick = np.random.default_rng(0).choice(ref_x.shape[0], particles, replace=False)
    sub = {k: v.reshape(-1, *v.shape[2:])[pick] for k, v in p.draws.items()}
    rows.append(_svgd_row(p, f"{particles} reference draws", sub, ref_x, ref_c, kernel, None, ""))
    return rows


def _svgd_row(
    p: Any,
    label: str,
    draws: dict[str, Any] | None,
    ref_x: np.ndarray,
    ref_c: np.ndarray,
    kernel: Any,
    t0: float | None,
    note: str,
) -> dict[str, Any]:
    from numpyro_dsd import ksd

    row: dict[str, Any] = {"case": label, "note": note}
    row["seconds"] = np.nan if t0 is None else time.perf_counter() - t0
    if draws is None:
        row.update(mean_err=np.nan, sd_err=np.nan, mean_err_c=np.nan, sd_err_c=np.nan, ksd=np.nan)
    else:
        draws = {k: np.asarray(v) for k, v in draws.items() if k in ref_names(p)}
        f = flat(p, draws)
        x = np.asarray(f.x, np.float64)
        row["mean_err"], row["sd_err"] = moment_errors(x, ref_x)
        row["mean_err_c"], row["sd_err_c"] = moment_errors(_constrained_matrix(draws, 1), ref_c)
        row["ksd"] = float(ksd(f.x, f.scores, kernel=kernel))
        row["pass"] = bool(row["mean_err"] <= MEAN_TOL and row["sd_err"] <= SD_TOL)
    print(f"  {label:32s} " + _line(row), flush=True)
    return row


def ref_names(p: Any) -> set[str]:
    return set(p.draws)


def moment_errors(x: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Largest standardised mean error and largest relative sd error over the coordinates."""
    x = x.reshape(-1, ref.shape[-1])
    mu, sd = ref.mean(0), ref.std(0, ddof=1)
    mean_err = np.abs(x.mean(0) - mu) / sd
    sd_err = np.abs(x.std(0, ddof=1) / sd - 1.0)
    return float(mean_err.max()), float(sd_err.max())


def _constrained_matrix(draws: dict[str, Any], batch_ndim: int) -> np.ndarray:
    """Constrained draws as one matrix (n, d): sites sorted, site dims flattened."""
    cols = []
    for k in sorted(draws):
        v = np.asarray(draws[k], np.float64)
        cols.append(v.reshape(int(np.prod(v.shape[:batch_ndim])), -1))
    return np.concatenate(cols, axis=1)


def initial(p: Any, key: jax.Array, particles: int) -> jax.Array:
    """Ours' default initial draw for ``key``: uniform on [-2, 2]^d (unconstrained)."""
    d = flat(p, {k: v[:1, :1] for k, v in p.draws.items()}).x.shape[-1]
    return jax.random.uniform(jax.random.split(key)[1], (particles, d), minval=-2.0, maxval=2.0)


def run_ours(
    p: Any, kwargs: dict[str, Any], key: jax.Array, steps: int, particles: int
) -> tuple[dict[str, Any] | None, str]:
    """``SVGD(model, optax.adagrad(STEP_SIZE), num_particles=particles, **kwargs)`` (the default
    preconditioner, "flow", unless ``kwargs`` says otherwise) run for ``steps`` from ``key``."""
    import optax

    from numpyro_dsd import SVGD, NonFiniteStepError

    svgd = SVGD(
        p.model, optax.adagrad(STEP_SIZE), num_particles=particles, flow_kwargs=FLOW_FIT,
        **kwargs, **p.model_kwargs,
    )  # fmt: skip
    try:
        result = svgd.run(key, steps, progress_bar=False)
    except NonFiniteStepError as err:
        return None, f"non-finite at step {int(err.result.state.step)}"
    return dict(svgd.get_samples(result)), ""


def run_numpyro(
    p: Any, key: jax.Array, steps: int, particles: int
) -> tuple[dict[str, Any] | None, str]:
    import optax
    from numpyro.contrib.einstein import SVGD, RBFKernel
    from numpyro.infer.initialization import init_to_uniform
    from numpyro.infer.util import constrain_fn
    from numpyro.optim import optax_to_numpyro

    svgd = SVGD(
        p.model, optax_to_numpyro(optax.adagrad(STEP_SIZE)), RBFKernel(),
        num_stein_particles=particles, guide_kwargs={"init_loc_fn": init_to_uniform},
    )  # fmt: skip
    try:
        state = svgd.init(jax.random.key(0), **p.model_kwargs)
        u0 = initial(p, key, particles)
        unravel = flat(p, {k: v[:1, :1] for k, v in p.draws.items()}).unravel
        model = _seeded(p.model)
        sites = jax.vmap(lambda u: constrain_fn(model, (), p.model_kwargs, unravel(u)))(u0)
        params = {f"{k}_auto_loc": v for k, v in sites.items()}
        state = state._replace(optim_state=svgd.optim.init(params))
        body = jax.jit(
            lambda s: jax.lax.fori_loop(0, 100, lambda i, t: svgd.update(t, **p.model_kwargs)[0], s)
        )  # noqa: E501
        for _ in range(steps // 100):
            state = body(state)
        held = svgd.get_params(state)
        draws = {k: held[f"{k}_auto_loc"] for k in p.draws}
    except Exception as err:  # noqa: BLE001 - report NumPyro's failure in the table
        return None, _failure(err)
    if not all(bool(np.all(np.isfinite(np.asarray(v)))) for v in draws.values()):
        return None, "non-finite particles"
    return draws, ""


def _failure(err: Exception) -> str:
    """``Error: message`` and the innermost ``numpyro/infer`` or ``numpyro/contrib`` frame."""
    import traceback

    frames = [
        f"{Path(f.filename).name}:{f.lineno}"
        for f in traceback.extract_tb(err.__traceback__)
        if "numpyro/infer" in f.filename or "numpyro/contrib" in f.filename
    ]
    msg = (str(err).splitlines() or [""])[0][:80]
    where = f" (in {frames[-1]})" if frames else ""
    return f"{type(err).__name__}{': ' + msg if msg else ''}{where}"


def _seeded(model: Any) -> Any:
    from numpyro import handlers

    return handlers.seed(model, rng_seed=0)


# --- output ----------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        v = float(v)
        if np.isnan(v):
            return "–"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4):
            return f"{v:.2e}"
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def table(rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> str:
    head = "| " + " | ".join(title for _, title in cols) + " |"
    rule = "|" + "---|" * len(cols)
    body = ["| " + " | ".join(_fmt(r.get(k, "")) for k, _ in cols) + " |" for r in rows]
    return "\n".join([head, rule, *body])


DIAG_COLS = [
    ("case", "draws"),
    ("rhat", "max R-hat"),
    ("ess", "min ESS"),
    ("ksd_identity", "KSD identity"),
    ("p_identity", "p identity"),
    ("verdict_identity", "verdict identity"),
    ("ksd_flow", "KSD flow"),
    ("p_flow", "p flow"),
    ("verdict_flow", "verdict flow"),
]
SVGD_COLS = [
    ("case", "method"),
    ("mean_err", "max mean err (sd)"),
    ("sd_err", "max sd err"),
    ("mean_err_c", "constrained mean err"),
    ("sd_err_c", "constrained sd err"),
    ("ksd", "KSD"),
    ("pass", "within 0.1 sd / 15%"),
    ("seconds", "seconds"),
    ("note", "note"),
]


def summary(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| posterior | reference verdict (identity / flow) | perturbations failed"
             " (identity / flow) | largest perturbed p (identity / flow) |"
             " NUTS verdict (identity / flow) | default SVGD | flow + linear SVGD |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, res in results.items():
        diag = res.get("diagnostic", [])
        ref = next((r for r in diag if r["kind"] == "reference"), None)
        pert = [r for r in diag if r["kind"] != "reference"]
        nuts = res.get("nuts")
        svgd = {r["case"]: r for r in res.get("svgd", [])}
        cells = [name]
        cells.append("–" if ref is None else _verdicts(ref))
        if pert:
            n_id = sum(_failed(r, "identity") for r in pert)
            n_fl = sum(_failed(r, "flow") for r in pert)
            cells.append(f"{n_id}/{len(pert)} / {n_fl}/{len(pert)}")
            worst = (max(r[k] for r in pert) for k in ("p_identity", "p_flow"))
            cells.append(" / ".join(_fmt(v) for v in worst))
        else:
            cells += ["–", "–"]
        cells.append("–" if nuts is None else _verdicts(nuts))
        for label in ("ours, default", "ours, flow + linear"):
            r = svgd.get(label)
            cells.append("–" if r is None else _pass_cell(r))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _failed(r: dict[str, Any], label: str) -> bool:
    """The row's pooled verdict is "fail" (rows from before the verdict: p < 0.01)."""
    return r.get(f"verdict_{label}", "fail" if r[f"p_{label}"] < 0.01 else "") == "fail"


def _verdicts(r: dict[str, Any]) -> str:
    """ "verdict (p)" for the identity and the flow diffusion."""
    cells = [
        f"{r.get(f'verdict_{k}', 'p only')} ({_fmt(r[f'p_{k}'])})" for k in ("identity", "flow")
    ]
    return " / ".join(cells)


def _pass_cell(r: dict[str, Any]) -> str:
    verdict = "pass" if r.get("pass") else "**miss**"
    return f"{verdict} ({_fmt(r['mean_err'])} sd, {_fmt(r['sd_err'])})"


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    flag = " --quick" if args.quick else ""
    parts = [
        f"Produced by `.venv/bin/python benchmarks/posteriordb.py{flag}`"
        f" on {datetime.date.today()}, {versions()}. SVGD budget: {args.particles} particles,"
        f" {args.steps} steps, `optax.adagrad({STEP_SIZE})`.",
        "",
        "### Summary",
        "",
        summary(results),
    ]
    for name, res in results.items():
        parts += ["", f"### {name}", ""]
        diag = res.get("diagnostic", []) + ([res["nuts"]] if "nuts" in res else [])
        if diag:
            parts += ["Diagnostic (pooled, wild bootstrap):", "", table(diag, DIAG_COLS), ""]
        if res.get("svgd"):
            parts += ["SVGD (errors in reference sd units):", "", table(res["svgd"], SVGD_COLS)]
    return "\n".join(parts) + "\n"


def versions() -> str:
    pkgs = ("jax", "numpyro", "arviz")
    v = ", ".join(f"{k} {importlib.metadata.version(k)}" for k in pkgs)
    return f"Python {platform.python_version()}, {v}, {CORES} CPU cores"


def write_doc(text: str) -> None:
    doc = DOC.read_text() if DOC.exists() else f"# Validation\n\n{BEGIN}\n{END}\n"
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    DOC.write_text(pattern.sub(lambda _: f"{BEGIN}\n{text}{END}", doc))


def figure(results: dict[str, dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    ax = axes[0]
    markers = {"reference": "o", "widen": "^", "shift": ">", "truncate": "v", "nuts": "s"}
    for i, name in enumerate(names):
        res = results[name]
        rows = res.get("diagnostic", []) + ([res["nuts"]] if "nuts" in res else [])
        for r in rows:
            for dx, key, color in ((-0.15, "p_identity", "C0"), (0.15, "p_flow", "C1")):
                filled = r["kind"] in ("reference", "nuts")
                ax.scatter(
                    i + dx, max(r[key], 1e-3), marker=markers[r["kind"]], s=36,
                    facecolors=color if filled else "none", edgecolors=color, alpha=0.8,
                )  # fmt: skip
    ax.axhline(0.05, color="grey", ls="--", lw=1)
    ax.axhline(0.01, color="grey", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), [n.split("-")[0] for n in names])
    ax.set_ylabel("pooled p-value")
    ax.set_title(
        "KSD test: reference (o), NUTS (s) filled; perturbed open\nblue identity, orange flow"
    )
    ax = axes[1]
    labels = [r["case"] for r in next(iter(results.values())).get("svgd", [])]
    width = 0.8 / max(len(labels), 1)
    for k, label in enumerate(labels):
        vals = [
            next((r["mean_err"] for r in results[n].get("svgd", []) if r["case"] == label), np.nan)
            for n in names
        ]
        ax.bar(np.arange(len(names)) + (k - len(labels) / 2 + 0.5) * width, vals, width,
               label=label)  # fmt: skip
    ax.axhline(MEAN_TOL, color="grey", ls="--", lw=1)
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), [n.split("-")[0] for n in names])
    ax.set_ylabel("largest |mean error| (reference sd)")
    ax.set_title("SVGD at the same budget")
    ax.legend(fontsize=7)
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=120)


def main() -> None:
    from numpyro_dsd.datasets.posteriordb import NAMES, load

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--posteriors", nargs="*", default=None)
    parser.add_argument("--only", choices=("diagnostic", "nuts", "svgd"), nargs="*")
    parser.add_argument("--particles", type=int, default=PARTICLES)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    names = args.posteriors or (NAMES[1:3] if args.quick else NAMES)
    if args.quick:
        args.particles, args.steps = min(args.particles, 50), min(args.steps, 200)
    parts = set(args.only or ("diagnostic", "nuts", "svgd"))
    # --only reruns some parts and keeps the others' numbers from the last full run
    results: dict[str, dict[str, Any]] = {}
    if args.only and RAW.exists():
        results = {k: v for k, v in json.loads(RAW.read_text()).items() if k in names}
    t_all = time.perf_counter()
    for name in names:
        p = load(name)
        print(f"== {name}", flush=True)
        res: dict[str, Any] = results.get(name, {})
        if "diagnostic" in parts:
            res["diagnostic"] = diagnostic_rows(p, args.quick)
        if "nuts" in parts:
            res["nuts"] = nuts_row(p, args.quick)
        if "svgd" in parts:
            res["svgd"] = svgd_rows(p, args.steps, args.particles)
        results[name] = res
    text = report(results, args)
    print(text)
    print(f"total {time.perf_counter() - t_all:.0f} s")
    if not args.no_write:
        write_doc(text)
        figure(results)
        RAW.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
