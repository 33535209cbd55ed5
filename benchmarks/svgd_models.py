"""SVGD on NumPyro's own example models against a reference, beside NumPyro's SVGD, one run.

Models (NumPyro's examples, as in ``benchmarks/zoo_models.py``): eight schools (centred, with
NumPyro's signature ``eight_schools(J, sigma, y)``), ``baseball.py``'s partially pooled logit
model, ``funnel.py`` (d = 10), ``horseshoe_regression.py``'s normal-likelihood model, and the
31-d Bayesian logistic regression of ``benchmarks/svgd.py`` (breast cancer). References: exact
draws for the funnel; NumPyro NUTS (4 x 1000 after 1000 warm-up, ``target_accept_prob=0.95``)
on the non-centred eight schools and baseball (mapped back to the centred sites) and on the
horseshoe; NUTS 4 x 2000 for the logistic regression (``svgd.py``'s cached reference).

Methods, 100 particles, ``--steps`` steps (default 1000), ``optax.adagrad(0.1)``:

- ours, default: ``SVGD(model, optax.adagrad(0.1))``: it fits a NeuTra flow, runs noisy SVGD
  in its latent space and finishes with 100 deterministic steps;
- ours, default, full / diagonal finish: the same with ``finish_moments="full"`` or
  ``"diagonal"`` (and the shared flow ``fit``, the one the default fits);
- ours, plain: ``preconditioner=None, noise_step=None, linear_weight=0`` (NumPyro's SVGD);
- ours, flow + linear: deterministic, ``preconditioner=fit, noise_step=None`` with one NeuTra
  flow per model (fitted as ``SVGD`` fits it, shared by the rows that take ``fit``);
- ours, noisy flow, no finish: ``SVGD(model, None, preconditioner=fit)``;
- NumPyro: ``numpyro.contrib.einstein.SVGD`` with ``RBFKernel`` and ``optax.adagrad(0.1)``;
- 100 reference draws, picked at random: the yardstick of independent draws (the funnel's
  marginals are so heavy-tailed that 100 exact draws miss the sd bar).

Errors in the model's flat unconstrained space (``numpyro_dsd.model.ModelLayout``), per
coordinate in reference sds: the largest |mean - reference mean| / sd and the range of
sd / reference sd. The issue's bar: means within 0.2 sd and sds within 25%.

Run: ``.venv/bin/python benchmarks/svgd_models.py [--steps 1000] [--only eight_schools ...]``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
import svgd as svgd_bench
from numpyro.infer import MCMC, NUTS
from numpyro.infer.reparam import LocScaleReparam
from zoo_models import (
    BASEBALL_AT_BATS,
    BASEBALL_HITS,
    EIGHT_SIGMA,
    EIGHT_Y,
    HORSESHOE_X,
    HORSESHOE_Y,
    baseball,
    eight_schools_numpyro,
    funnel,
    horseshoe,
)

from numpyro_dsd import SVGD
from numpyro_dsd.model import ModelLayout

N = 100


def nuts_reference(model: Callable, args: tuple, kwargs: dict, sites: tuple) -> dict:
    """NUTS draws of ``sites`` (a non-centred model's deterministic sites are recorded)."""
    mcmc = MCMC(
        NUTS(model, target_accept_prob=0.95),
        num_warmup=1000,
        num_samples=1000,
        num_chains=4,
        chain_method="sequential",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), *args, **kwargs)
    samples = mcmc.get_samples()
    return {k: np.asarray(samples[k]) for k in sites}


def funnel_reference() -> dict:
    rng = np.random.default_rng(0)
    y = rng.normal(0.0, 3.0, 4000)
    return {"y": y, "x": rng.normal(size=(4000, 9)) * np.exp(y / 2)[:, None]}


def cases() -> dict[str, tuple[Callable, tuple, dict, Callable[[], dict]]]:
    reparam = numpyro.handlers.reparam
    non_centred_es = reparam(eight_schools_numpyro, config={"theta": LocScaleReparam(0)})
    non_centred_bb = reparam(baseball, config={"alpha": LocScaleReparam(0)})
    es_args, es_kwargs = (8, EIGHT_SIGMA), {"y": EIGHT_Y}
    bb_args = (BASEBALL_AT_BATS, BASEBALL_HITS)
    hs_args = (HORSESHOE_X, HORSESHOE_Y)
    hs_sites = ("lambdas", "tau", "unscaled_betas", "prec_obs")
    return {
        "eight_schools": (
            eight_schools_numpyro,
            es_args,
            es_kwargs,
            lambda: nuts_reference(non_centred_es, es_args, es_kwargs, ("mu", "tau", "theta")),
        ),
        "baseball": (
            baseball,
            bb_args,
            {},
            lambda: nuts_reference(non_centred_bb, bb_args, {}, ("loc", "scale", "alpha")),
        ),
        "funnel": (funnel, (), {}, funnel_reference),
        "logreg": (
            svgd_bench.logreg_model,
            svgd_bench.logreg_data(),
            {},
            lambda: {"beta": svgd_bench.logreg(False).ref},
        ),
        "horseshoe": (
            horseshoe,
            hs_args,
            {},
            lambda: nuts_reference(horseshoe, hs_args, {}, hs_sites),
        ),
    }


def errors(x: np.ndarray, ref: np.ndarray) -> str:
    mu, sd = ref.mean(0), ref.std(0)
    if not np.all(np.isfinite(x)):
        return "not finite | - | -"
    me = np.abs(x.mean(0) - mu) / sd
    ratio = x.std(0, ddof=1) / sd
    ok = me.max() <= 0.2 and np.all(np.abs(ratio - 1) <= 0.25)
    return f"{me.max():.3f} | {ratio.min():.2f}-{ratio.max():.2f} | {'yes' if ok else 'no'}"


def run_ours(model, args, kwargs, steps, optim, **kw) -> tuple[np.ndarray, str]:
    svgd = SVGD(model, optim, num_particles=N, **kw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = svgd.run(jax.random.key(0), steps, *args, progress_bar=False, **kwargs)
    diverging = any("diverging" in str(w.message) for w in caught)
    return np.asarray(r.particles), "warned" if diverging else ""


def run_numpyro(model, args, kwargs, steps, layout) -> tuple[np.ndarray, str]:
    from numpyro.contrib import einstein
    from numpyro.optim import optax_to_numpyro

    svgd = einstein.SVGD(
        model, optax_to_numpyro(optax.adagrad(0.1)), einstein.RBFKernel(), num_stein_particles=N
    )
    r = svgd.run(jax.random.key(0), steps, *args, progress_bar=False, **kwargs)
    p = svgd.get_params(r.state)
    # AutoDelta's locations are constrained values: the layout maps them to the flat space
    sites = {k: p[f"{k}_auto_loc"] for k in layout.site_names}
    return np.asarray(jax.vmap(layout.flatten)(sites)), ""


def methods(model, margs, mkwargs, steps, fit, layout) -> dict[str, Callable[[], tuple]]:
    """The rows of one model: name -> a call returning (flat particles, note)."""
    adagrad = optax.adagrad(0.1)
    plain = {"preconditioner": None, "noise_step": None, "linear_weight": 0.0}
    return {
        "ours, default": lambda: run_ours(model, margs, mkwargs, steps, adagrad),
        "ours, default, full finish": lambda: run_ours(
            model, margs, mkwargs, steps, adagrad, preconditioner=fit, finish_moments="full"
        ),
        "ours, default, diagonal finish": lambda: run_ours(
            model, margs, mkwargs, steps, adagrad, preconditioner=fit, finish_moments="diagonal"
        ),
        "ours, plain": lambda: run_ours(model, margs, mkwargs, steps, adagrad, **plain),
        "ours, flow + linear": lambda: run_ours(
            model,
            margs,
            mkwargs,
            steps,
            adagrad,
            preconditioner=fit,
            noise_step=None,
            linear_weight=1.0,
        ),
        "ours, noisy flow, no finish": lambda: run_ours(
            model, margs, mkwargs, steps, None, preconditioner=fit
        ),
        "NumPyro SVGD": lambda: run_numpyro(model, margs, mkwargs, steps, layout),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--only", nargs="*", default=list(cases()))
    args = parser.parse_args()
    print(f"# {' '.join(sys.argv)}  ({datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC)")
    print("| model | d | method | largest mean error (sd) | sd ratios | within bar | note | s |")
    print("|---|---:|---|---:|---|---|---|---:|")
    for name in args.only:
        model, margs, mkwargs, reference = cases()[name]
        layout = ModelLayout(model, margs, mkwargs)
        ref_sites = reference()
        ref = np.asarray(
            jax.vmap(layout.flatten)({k: jnp.asarray(v) for k, v in ref_sites.items()})
        )
        flow_svgd = SVGD(model, optax.adagrad(0.1), num_particles=N, preconditioner="flow")
        fit = flow_svgd.init_with_fit(jax.random.key(0), *margs, **mkwargs)[1]  # as SVGD fits
        rows = methods(model, margs, mkwargs, args.steps, fit, layout)
        for method, fn in rows.items():
            t0 = time.perf_counter()
            try:
                x, note = fn()
                cells = errors(x, ref)
            except Exception as err:  # a failing method is a result
                cells, note = "error | - | -", f"{type(err).__name__}: {str(err)[:80]}"
            print(
                f"| {name} | {layout.dim} | {method} | {cells} | {note} | "
                f"{time.perf_counter() - t0:.0f} |",
                flush=True,
            )
        pick = np.random.default_rng(0).choice(ref.shape[0], N, replace=False)
        print(f"| {name} | {layout.dim} | {N} reference draws | {errors(ref[pick], ref)} |  | 0 |")


if __name__ == "__main__":
    main()
