"""Flow fits on real models: the default ``fit_flow`` and the ``"flow"`` diagnostic (issue 15).

For each model, as a new user would run it:

1. ``fit_flow(model, *args)`` with every default: wall time (compilation included), steps whose
   loss was not finite, the median loss over the first and the last tenth of the steps, the
   step-size factor it ended with (1 unless it backed off) and the PSIS k-hat of the flow as an
   importance proposal (``FlowFit.summary()``);
2. ``ksd_diagnostic(draws, model, diffusion="flow")`` (a fresh fit with the same defaults and
   another key) on draws from the posterior: pooled p-value and verdict (must pass: p > 0.05 or
   "pass");
3. the same on the draws widened by 20% about their mean in the flat unconstrained space
   (``numpyro_dsd.datasets.posteriordb.perturb(..., "widen")``): pooled p (must be < 0.01).

Models and draws:

- ``eight_schools`` (centred, d = 10): posteriordb's reference draws of the non-centred model
  mapped to the centred parameters (theta = mu + tau theta_trans; the same posterior);
- ``funnel`` (NumPyro ``funnel.py``, d = 10): exact draws, 4 x 1000;
- ``baseball`` (``baseball.py`` logit, d = 20): NumPyro NUTS 4 x 1000 (target_accept 0.95) on the
  non-centred version (``LocScaleReparam``), mapped to the centred alpha;
- ``horseshoe`` (``horseshoe_regression.py``'s normal likelihood with its ``get_data(N=100,
  D_X=32)``, d = 66): NUTS 4 x 1000;
- ``stochastic_volatility`` (``stochastic_volatility.py`` on 300 synthetic returns, d = 302):
  NUTS 4 x 1000;
- posteriordb ``earnings-earn_height``, ``kidiq-kidscore_momiq``, ``sblrc-blr``: reference draws
  (10 x 1000); ``kidiq_exact``: kidiq with i.i.d. draws of its closed-form posterior (the
  reference draws are 2.3 standard errors off, docs/validation.md).

Run: ``.venv/bin/python benchmarks/flow_models.py [--only NAME ...]`` (about 25 minutes on 2
cores, most of it NUTS on the two large models); prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from numpyro.handlers import reparam
from numpyro.infer import MCMC, NUTS
from numpyro.infer.reparam import LocScaleReparam

sys.path.insert(0, str(Path(__file__).parent))
import zoo_models as zm  # noqa: E402

from numpyro_dsd import fit_flow, ksd_diagnostic  # noqa: E402
from numpyro_dsd.datasets.posteriordb import (  # noqa: E402
    Posterior,
    kidiq_exact_draws,
    load,
    perturb,
)


def horseshoe_data(n: int = 100, p: int = 32, sigma_obs: float = 0.05) -> tuple:
    """``horseshoe_regression.py``'s ``get_data``: 3 of 32 coefficients non-zero."""
    rng = np.random.RandomState(0)
    X = rng.randn(n, p)
    Y = X[:, :3] @ np.array([2.0, -1.0, 0.5])
    Y = Y - Y.mean() + sigma_obs * rng.randn(n)
    return X, Y


def returns(t: int = 300) -> np.ndarray:
    """Synthetic returns (the example's S&P 500 data is not shipped): log-volatility a random
    walk with steps of sd 0.1 about -4, Student-t(8) shocks."""
    rng = np.random.default_rng(0)
    return np.exp(np.cumsum(0.1 * rng.normal(size=t)) - 4.0) * rng.standard_t(8.0, size=t)


def nuts(model: Callable, kwargs: dict, seed: int = 0, **kernel: Any) -> dict:
    mcmc = MCMC(
        NUTS(model, **kernel),
        num_warmup=1000,
        num_samples=1000,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(seed), **kwargs)
    divergences = int(np.sum(mcmc.get_extra_fields()["diverging"]))
    draws = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    return draws, f"NUTS 4 x 1000, {divergences} divergences"


def eight_schools() -> tuple[Posterior, str]:
    ref = load("eight_schools-eight_schools_noncentered")
    d = ref.draws
    theta = d["mu"][..., None] + d["tau"][..., None] * d["theta_trans"]
    kw = {"sigma": zm.EIGHT_SIGMA, "y": zm.EIGHT_Y}
    draws = {"mu": d["mu"], "tau": d["tau"], "theta": theta}
    return Posterior("eight_schools", zm.eight_schools, kw, draws), "posteriordb reference"


def funnel() -> tuple[Posterior, str]:
    rng = np.random.default_rng(0)
    y = 3.0 * rng.normal(size=(4, 1000))
    x = np.exp(y / 2)[..., None] * rng.normal(size=(4, 1000, 9))
    return Posterior("funnel", zm.funnel, {"dim": 10}, {"y": y, "x": x}), "exact, 4 x 1000"


def baseball() -> tuple[Posterior, str]:
    kw = {"at_bats": zm.BASEBALL_AT_BATS, "hits": zm.BASEBALL_HITS}
    noncentred = reparam(zm.baseball, config={"alpha": LocScaleReparam(0)})
    draws, how = nuts(noncentred, kw, target_accept_prob=0.95)
    draws = {k: draws[k] for k in ("loc", "scale", "alpha")}
    return Posterior("baseball", zm.baseball, kw, draws), how + " (non-centred run)"


def horseshoe() -> tuple[Posterior, str]:
    X, Y = horseshoe_data()
    kw = {"X": X, "y": Y}
    draws, how = nuts(zm.horseshoe, kw)
    draws.pop("betas")
    return Posterior("horseshoe", zm.horseshoe, kw, draws), how


def stochastic_volatility() -> tuple[Posterior, str]:
    kw = {"returns": returns()}
    draws, how = nuts(zm.stochastic_volatility, kw)
    return Posterior("stochastic_volatility", zm.stochastic_volatility, kw, draws), how


def posteriordb(name: str) -> Callable[[], tuple[Posterior, str]]:
    return lambda: (load(name), "posteriordb reference")


def kidiq_exact() -> tuple[Posterior, str]:
    """kidiq with 10 x 1000 i.i.d. draws of its closed-form posterior: posteriordb's reference
    draws sit 2.3 standard errors off along the narrowest direction (docs/validation.md)."""
    p = load("kidiq-kidscore_momiq")
    draws = kidiq_exact_draws(p, np.random.default_rng(1), 10000)
    return Posterior(p.name, p.model, p.model_kwargs, draws), "exact (closed form), 10 x 1000"


CASES = {
    "eight_schools": eight_schools,
    "funnel": funnel,
    "baseball": baseball,
    "horseshoe": horseshoe,
    "stochastic_volatility": stochastic_volatility,
    "earnings-earn_height": posteriordb("earnings-earn_height"),
    "kidiq-kidscore_momiq": posteriordb("kidiq-kidscore_momiq"),
    "kidiq_exact": kidiq_exact,
    "sblrc-blr": posteriordb("sblrc-blr"),
}


def run(name: str) -> str:
    t0 = time.perf_counter()
    post, how = CASES[name]()
    t_draws = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit = fit_flow(post.model, progress_bar=False, **post.model_kwargs)
    t_fit = time.perf_counter() - t0
    s = fit.summary()
    cells = [name, how, f"{t_draws:.0f}", str(fit.flow.spec.dim), f"{t_fit:.1f}"]
    cells += [str(s["num_nonfinite"]), f"{s['loss_first']:.4g} → {s['loss_last']:.4g}"]
    cells += [f"{s['step_scale']:g}", f"{s['khat']:.2f}"]
    for draws in (post.draws, perturb(post, "widen")):
        t0 = time.perf_counter()
        ds = ksd_diagnostic(draws, post.model, model_kwargs=post.model_kwargs, diffusion="flow")
        khat = float(ds.attrs.get("flow_khat", np.nan))
        cells += [
            f"{float(ds.pvalue_pooled):.3f} ({ds.verdict_pooled.values}, k̂ {khat:.2f}, "
            f"{time.perf_counter() - t0:.0f} s)"
        ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", default=list(CASES))
    args = parser.parse_args()
    print(f"# {' '.join(sys.argv)}  ({datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC)")
    print(
        "| model | draws | draws s | d | fit s | non-finite | loss (first → last tenth) | "
        "step factor | k̂ | diagnostic, draws: pooled p (verdict, k̂, s) | widened 20% |"
    )
    print("|---|---|---:|---:|---:|---:|---|---:|---:|---|---|")
    for name in args.only:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # k-hat warnings are in the table
            print(run(name), flush=True)


if __name__ == "__main__":
    main()
