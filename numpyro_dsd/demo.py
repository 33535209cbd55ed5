"""The demo diagnostic (``numpyro-dsd demo``): Neal's funnel sampled well and badly.

Target: Neal's funnel in d dimensions, :math:`v \\sim \\mathcal N(0, 3^2)`,
:math:`x_k \\mid v \\sim \\mathcal N(0, e^{v})`, k = 1..d-1, written in the *centred* form.
Its answer is known: :math:`v` is exactly :math:`\\mathcal N(0, 9)`.

- **badly posed**: NUTS on the centred model. The neck (v < -2) is too narrow for one step size;
  NUTS diverges there and under-samples it. Every chain is biased the same way, so R-hat sees
  it only where the chains happen to disagree.
- **well posed**: NUTS on the non-centred model (:math:`x = e^{v/2}\\varepsilon`), whose draws
  mapped back to (v, x) are exact draws of the same target.

Both sets are diagnosed against the centred model, with the identity diffusion (plain KSD) and
with a flow diffusion (NeuTra flow fitted to the model, docs/math.md §3), and printed next to R-hat
and ESS; the KSD along each chain is saved as a figure, and the draws with their scores as a
netCDF file that ``numpyro-dsd diagnose`` reads without the model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
from numpyro.infer import MCMC, NUTS

from numpyro_dsd import arviz as arviz_io
from numpyro_dsd.arviz.summary import stein_summary
from numpyro_dsd.mcmc.diagnostic import diagnose_draws
from numpyro_dsd.mcmc.inputs import Draws, resolve_diffusion, resolve_draws
from numpyro_dsd.vocabulary import renamed_arguments

__all__ = ["funnel", "funnel_noncentred", "run_demo"]


def funnel(d: int = 5) -> None:
    """Neal's funnel, centred: v ~ N(0, 3^2), x | v ~ N(0, exp(v) I_{d-1})."""
    v = numpyro.sample("v", dist.Normal(0.0, 3.0))
    numpyro.sample("x", dist.Normal(0.0, jnp.exp(v / 2)).expand([d - 1]).to_event(1))


def funnel_noncentred(d: int = 5) -> None:
    """The same funnel, non-centred: x = exp(v/2) eps with eps ~ N(0, I)."""
    v = numpyro.sample("v", dist.Normal(0.0, 3.0))
    eps = numpyro.sample("eps", dist.Normal(0.0, 1.0).expand([d - 1]).to_event(1))
    numpyro.deterministic("x", jnp.exp(v / 2) * eps)


def _nuts(model: Any, d: int, key: jax.Array, num_samples: int, num_chains: int) -> MCMC:
    mcmc = MCMC(
        NUTS(model),
        num_warmup=500,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method="sequential",
        progress_bar=False,
    )
    mcmc.run(key, d, extra_fields=("diverging",))
    return mcmc


def _row(name: str, diffusion: str, ds: Any, data: Any, divergences: int) -> dict[str, Any]:
    table = stein_summary(ds, data)
    pooled = table.loc["pooled"]
    return {
        "sampler": name,
        "diffusion": diffusion,
        "divergences": divergences,
        "r_hat_max": pooled["r_hat_max"],
        "ess_bulk_min": pooled["ess_bulk_min"],
        "verdict": str(ds.verdict_pooled.values),
        "ksd_ratio": float(ds.ksd_ratio_pooled),
        "p_pooled": pooled["pvalue"],
        "chains": " ".join(str(v) for v in ds.verdict.values),
        "v_mean": float(np.mean(arviz_io.posterior_dict(data)["v"])),
        "v_sd": float(np.std(arviz_io.posterior_dict(data)["v"])),
    }


@renamed_arguments(chains="num_chains", n_boot="num_bootstrap", flow_steps="num_flow_steps")
def run_demo(
    out_dir: str | Path = "numpyro_dsd_demo",
    *,
    d: int = 5,
    num_samples: int = 1000,
    num_chains: int = 4,
    num_bootstrap: int = 500,
    num_flow_steps: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Run the demo; returns the table it prints and writes ``out_dir``/{demo.png, *.nc}.

    ``num_samples`` draws per chain, ``num_chains`` chains, ``num_bootstrap`` bootstrap
    replicates, ``num_flow_steps`` NeuTra fitting steps (``fit_flow``'s default 2000, the length
    its step-size schedule is made for); every key is split from
    ``jax.random.key(seed)`` (``chains``, ``n_boot`` and ``flow_steps`` are deprecated names).

    Examples
    --------
    >>> table = run_demo("/tmp/demo", num_samples=200, num_bootstrap=100)  # doctest: +SKIP
    """
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    k_bad, k_good, k_flow, k_test = jax.random.split(jax.random.key(seed), 4)
    bad = _nuts(funnel, d, k_bad, num_samples, num_chains)
    good = _nuts(funnel_noncentred, d, k_good, num_samples, num_chains)
    sets = {
        "centred NUTS (biased)": (bad, bad.get_samples(group_by_chain=True)),
        "non-centred NUTS (exact)": (good, good.get_samples(group_by_chain=True)),
    }
    draws = {
        name: resolve_draws({k: s[k] for k in ("v", "x")}, funnel, (d,))
        for name, (_, s) in sets.items()
    }
    flow = resolve_diffusion(
        "flow",
        draws["centred NUTS (biased)"],
        rng_key=k_flow,
        flow_kwargs={"num_steps": num_flow_steps},
    )
    rows, results = [], {}
    for name, (mcmc, samples) in sets.items():
        data = _stored(draws[name], samples)
        divergences = int(np.sum(mcmc.get_extra_fields()["diverging"]))
        for label, diffusion in (("identity", None), ("flow", flow)):
            ds = _diagnose(draws[name], diffusion, k_test, num_bootstrap, label)
            results[name, label] = ds
            rows.append(_row(name, label, ds, data, divergences))
        arviz_io.save(arviz_io.add_diagnostics(data, results[name, "flow"]), out / _file(name))
    table = pd.DataFrame(rows).set_index(["sampler", "diffusion"])
    _figure(results, out / "demo.png")
    table.attrs["seconds"] = time.perf_counter() - start
    table.attrs["alpha"] = next(iter(results.values())).attrs["alpha"]
    return table


def _stored(draws: Draws, samples: dict[str, Any]) -> Any:
    posterior = {k: np.asarray(samples[k]) for k in ("v", "x")}
    return arviz_io.from_stein_inputs(draws.x, draws.scores, draws.site_names, posterior)


def _diagnose(draws: Draws, diffusion: Any, key: jax.Array, num_bootstrap: int, label: str) -> Any:
    from numpyro_dsd.stein.diffusion import Identity

    diffusion = Identity() if diffusion is None else diffusion
    return diagnose_draws(
        draws, diffusion, rng_key=key, num_bootstrap=num_bootstrap, diffusion_name=label
    )


def _file(name: str) -> str:
    return "centred.nc" if name.startswith("centred") else "noncentred.nc"


def _figure(results: dict[tuple[str, str], Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from numpyro_dsd.arviz.plots import plot_ksd_trace

    fig, axes = plt.subplots(2, 2, figsize=(10, 8), sharex=True)
    for ax, ((name, label), ds) in zip(axes.ravel(), sorted(results.items()), strict=True):
        plot_ksd_trace(ds, ax=ax)
        ax.set_title(
            f"{name}\n{label} diffusion: {ds.verdict_pooled.values} ({ds.reason_pooled.values})"
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
