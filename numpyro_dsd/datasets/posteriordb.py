"""Six posteriors from posteriordb as NumPyro models, with their data and reference draws.

posteriordb (Magnusson et al., github.com/stan-dev/posteriordb, BSD 3-clause) publishes Stan
models, data and reference draws from long Stan runs (10 chains x 1,000 thinned draws, ESS about
10,000). This module ports six of them to NumPyro and reads the copies shipped in
``numpyro_dsd/data/posteriordb`` (with the licence), so anyone can check a diagnostic or a sampler
against answers nobody here produced:

=============================================  ===========================================  ===
name                                           model (the Stan program's ``model`` block)     d
=============================================  ===========================================  ===
``eight_schools-eight_schools_noncentered``    :func:`eight_schools_noncentered`             10
``kidiq-kidscore_momiq``                       :func:`kidscore_momiq` (flat prior on beta)    3
``arK-arK``                                    :func:`arK`, AR(5)                             7
``garch-garch11``                              :func:`garch11`, flat priors on the simplex    4
``sblrc-blr``                                  :func:`blr`, Bayesian linear regression        6
``earnings-earn_height``                       :func:`earn_height`, earnings (dollars) on     3
                                               height (inches): scales 10^4 apart
=============================================  ===========================================  ===

A port is right when the reference draws pass the KSD diagnostic (the density must match Stan's up
to a constant: every flat prior of Stan is an ``ImproperUniform`` here, never a proper uniform).

:func:`perturb` makes the draws wrong in ways R-hat cannot see (every chain changed alike), for
the power checks of ``benchmarks/posteriordb.py``:

- ``"widen"``: :math:`x \\mapsto \\bar x + 1.2\\,(x - \\bar x)`;
- ``"shift"``: :math:`x_j \\mapsto x_j + 0.3\\,\\mathrm{sd}(x_j)` in one coordinate j;
- ``"truncate"``: each chain loses its draws above its own 90% quantile of :math:`x_j`.

They act on the flat unconstrained draws (the space where NUTS, SVGD and the diagnostic work), so
the perturbed draws stay inside the support.
"""

from __future__ import annotations

import inspect
import json
import zipfile
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.infer.util import constrain_fn

from numpyro_dsd.model.targets import model_draws

__all__ = [
    "NAMES",
    "Posterior",
    "load",
    "perturb",
    "PERTURBATIONS",
    "kidiq_exact_draws",
    "eight_schools_noncentered",
    "kidscore_momiq",
    "arK",
    "garch11",
    "blr",
    "earn_height",
]

#: The posteriors shipped, by their posteriordb names.
NAMES = (
    "eight_schools-eight_schools_noncentered",
    "kidiq-kidscore_momiq",
    "arK-arK",
    "garch-garch11",
    "sblrc-blr",
    "earnings-earn_height",
)

#: The perturbations of :func:`perturb`.
PERTURBATIONS = ("widen", "shift", "truncate")


class Posterior(NamedTuple):
    """A posteriordb posterior: its NumPyro model, data and reference draws.

    Attributes
    ----------
    name : str
        posteriordb name, e.g. ``"kidiq-kidscore_momiq"``.
    model : callable
        The NumPyro model; call it as ``model(**model_kwargs)``.
    model_kwargs : dict
        The posteriordb data as the model's keyword arguments (``jax.numpy`` arrays).
    draws : dict
        Reference draws of the latent sites, ``{site: (chains, draws, *site_shape)}`` (numpy,
        float64), constrained, as ``mcmc.get_samples(group_by_chain=True)`` would give them.
    """

    name: str
    model: Any
    model_kwargs: dict[str, Any]
    draws: dict[str, np.ndarray]


# ---------------------------------------------------------------------------------------------
# The models. Each follows the posteriordb Stan program's model block line by line.


def eight_schools_noncentered(J: int, y: Any, sigma: Any) -> None:
    """Eight schools, non-centred (posteriordb ``eight_schools_noncentered.stan``).

    .. math::
        \\tilde\\theta_j \\sim \\mathcal N(0, 1),\\ \\mu \\sim \\mathcal N(0, 5),\\
        \\tau \\sim \\mathrm{Cauchy}^+(0, 5),\\ \\theta = \\mu + \\tau\\tilde\\theta,\\
        y_j \\sim \\mathcal N(\\theta_j, \\sigma_j).

    Sites ``theta_trans`` (J,), ``mu``, ``tau``; deterministic ``theta``.

    Examples
    --------
    >>> from numpyro.infer.util import log_density
    >>> kw = load("eight_schools-eight_schools_noncentered").model_kwargs
    >>> params = {"theta_trans": jnp.zeros(8), "mu": 0.0, "tau": 1.0}
    >>> bool(jnp.isfinite(log_density(eight_schools_noncentered, (), kw, params)[0]))
    True
    """
    theta_trans = numpyro.sample("theta_trans", dist.Normal(0.0, 1.0).expand([J]).to_event(1))
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    theta = numpyro.deterministic("theta", theta_trans * tau + mu)
    numpyro.sample("y", dist.Normal(theta, sigma).to_event(1), obs=y)


def kidscore_momiq(N: int, kid_score: Any, mom_iq: Any) -> None:
    """Child's test score on mother's IQ (posteriordb ``kidscore_momiq.stan``).

    .. math::
        p(\\beta) \\propto 1,\\ \\sigma \\sim \\mathrm{Cauchy}^+(0, 2.5),\\
        \\mathrm{kid\\_score}_i \\sim
        \\mathcal N(\\beta_1 + \\beta_2\\,\\mathrm{mom\\_iq}_i, \\sigma).

    Sites ``beta`` (2,) (improper flat prior, as in Stan), ``sigma``.

    Examples
    --------
    >>> p = load("kidiq-kidscore_momiq")
    >>> p.draws["beta"].shape, p.draws["sigma"].shape
    ((10, 1000, 2), (10, 1000))
    """
    beta = numpyro.sample("beta", dist.ImproperUniform(constraints.real_vector, (), (2,)))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    mean = beta[0] + beta[1] * mom_iq
    numpyro.sample("kid_score", dist.Normal(mean, sigma).to_event(1), obs=kid_score)


def arK(K: int, T: int, y: Any) -> None:
    """Autoregressive model of order K (posteriordb ``arK.stan``).

    .. math::
        \\alpha, \\beta_k \\sim \\mathcal N(0, 10),\\ \\sigma \\sim \\mathrm{Cauchy}^+(0, 2.5),\\
        y_t \\sim \\mathcal N\\Big(\\alpha + \\sum_{k=1}^K \\beta_k y_{t-k}, \\sigma\\Big),\\
        t = K+1..T.

    Sites ``alpha``, ``beta`` (K,), ``sigma``.

    Examples
    --------
    >>> p = load("arK-arK")
    >>> p.model_kwargs["K"], p.draws["beta"].shape
    (5, (10, 1000, 5))
    """
    y = jnp.asarray(y)
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 10.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([K]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    # lags[t - K, k - 1] = y[t - k] for t = K..T-1 (0-based)
    lags = jnp.stack([y[K - k : T - k] for k in range(1, K + 1)], axis=-1)
    numpyro.sample("y", dist.Normal(alpha + lags @ beta, sigma).to_event(1), obs=y[K:])


def garch11(T: int, y: Any, sigma1: float) -> None:
    """GARCH(1,1) volatility model (posteriordb ``garch11.stan``).

    .. math::
        \\sigma_1 \\text{ given},\\
        \\sigma_t^2 = \\alpha_0 + \\alpha_1 (y_{t-1} - \\mu)^2 + \\beta_1 \\sigma_{t-1}^2,\\
        y_t \\sim \\mathcal N(\\mu, \\sigma_t),

    with Stan's flat priors on :math:`\\mu \\in \\mathbb R`, :math:`\\alpha_0 > 0`,
    :math:`\\alpha_1 \\in (0, 1)`, :math:`\\beta_1 \\in (0, 1 - \\alpha_1)` (improper uniforms
    here, so no :math:`1/(1 - \\alpha_1)` enters the density).

    Sites ``mu``, ``alpha0``, ``alpha1`` and ``beta1_raw`` :math:`= \\beta_1 / (1 - \\alpha_1)`
    (flat on (0, 1), with the Jacobian :math:`1 - \\alpha_1` as a factor: the density of
    :math:`(\\alpha_1, \\beta_1)` stays flat, and the unconstrained coordinate
    :math:`\\mathrm{logit}\\,\\beta_1^{raw}` is Stan's); deterministic ``beta1``.

    Examples
    --------
    >>> p = load("garch-garch11")
    >>> sorted(p.draws), bool(np.all((p.draws["beta1_raw"] > 0) & (p.draws["beta1_raw"] < 1)))
    (['alpha0', 'alpha1', 'beta1_raw', 'mu'], True)
    """
    y = jnp.asarray(y)
    mu = numpyro.sample("mu", dist.ImproperUniform(constraints.real, (), ()))
    alpha0 = numpyro.sample("alpha0", dist.ImproperUniform(constraints.positive, (), ()))
    alpha1 = numpyro.sample("alpha1", dist.ImproperUniform(constraints.unit_interval, (), ()))
    # beta1 in (0, 1 - alpha1), flat: beta1 = (1 - alpha1) * beta1_raw with beta1_raw flat on
    # (0, 1) and the Jacobian |d beta1 / d beta1_raw| = 1 - alpha1 (Stan's own transform). A site
    # with the dependent support interval(0, 1 - alpha1) would be the same density, but NumPyro's
    # MCMC returns constrained draws that break the bound (alpha1 + beta1 > 1).
    beta1_raw = numpyro.sample("beta1_raw", dist.ImproperUniform(constraints.unit_interval, (), ()))
    numpyro.factor("beta1_jacobian", jnp.log1p(-alpha1))
    beta1 = numpyro.deterministic("beta1", (1.0 - alpha1) * beta1_raw)

    def volatility(var_prev: jax.Array, y_prev: jax.Array) -> tuple[jax.Array, jax.Array]:
        var = alpha0 + alpha1 * (y_prev - mu) ** 2 + beta1 * var_prev
        return var, var

    var1 = jnp.square(jnp.asarray(sigma1, dtype=jnp.result_type(float)))
    _, var = jax.lax.scan(volatility, var1, y[:-1])
    sigma = jnp.sqrt(jnp.concatenate([var1[None], var]))
    numpyro.sample("y", dist.Normal(mu, sigma).to_event(1), obs=y)


def blr(N: int, D: int, X: Any, y: Any) -> None:
    """Bayesian linear regression (posteriordb ``blr.stan``).

    .. math::
        \\beta_j \\sim \\mathcal N(0, 10),\\ \\sigma \\sim \\mathcal N^+(0, 10),\\
        y \\sim \\mathcal N(X\\beta, \\sigma I).

    Sites ``beta`` (D,), ``sigma``.

    Examples
    --------
    >>> p = load("sblrc-blr")
    >>> p.model_kwargs["X"].shape, p.draws["beta"].shape
    ((100, 5), (10, 1000, 5))
    """
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([D]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(10.0))
    numpyro.sample("y", dist.Normal(jnp.asarray(X) @ beta, sigma).to_event(1), obs=y)


def earn_height(N: int, earn: Any, height: Any) -> None:
    """Earnings on height (posteriordb ``earn_height.stan``, Gelman & Hill 2006, ch. 4).

    .. math::
        p(\\beta) \\propto 1,\\ p(\\sigma) \\propto 1 \\text{ on } (0, \\infty),\\
        \\mathrm{earn}_i \\sim \\mathcal N(\\beta_1 + \\beta_2\\,\\mathrm{height}_i, \\sigma).

    Sites ``beta`` (2,) and ``sigma``, all with Stan's improper flat priors. Earnings are in
    dollars and heights in inches: the posterior sds are about 9700 (intercept), 140 (slope) and
    390 (sigma), with an intercept-slope correlation of -0.998, the badly scaled case a flow
    diffusion must handle (docs/validation.md).

    Examples
    --------
    >>> p = load("earnings-earn_height")
    >>> p.model_kwargs["earn"].shape, p.draws["beta"].shape
    ((1192,), (10, 1000, 2))
    """
    beta = numpyro.sample("beta", dist.ImproperUniform(constraints.real_vector, (), (2,)))
    sigma = numpyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
    mean = beta[0] + beta[1] * jnp.asarray(height)
    numpyro.sample("earn", dist.Normal(mean, sigma).to_event(1), obs=earn)


_MODELS = {
    "eight_schools-eight_schools_noncentered": eight_schools_noncentered,
    "kidiq-kidscore_momiq": kidscore_momiq,
    "arK-arK": arK,
    "garch-garch11": garch11,
    "sblrc-blr": blr,
    "earnings-earn_height": earn_height,
}


# ---------------------------------------------------------------------------------------------
# Loading.


def load(name: str, root: str | Path | None = None) -> Posterior:
    """The NumPyro model, data and reference draws of a posteriordb posterior.

    Parameters
    ----------
    name : str
        One of :data:`NAMES`.
    root : path, optional
        A posteriordb-style folder with ``data/``, ``draws/`` and ``posteriors/`` (as
        ``posteriors/NAME.json`` names them); default the copy shipped with the package.

    Returns
    -------
    Posterior
        ``model``, ``model_kwargs`` (the data) and ``draws`` (``{site: (10, 1000, ...)}``).

    Examples
    --------
    >>> p = load("eight_schools-eight_schools_noncentered")
    >>> sorted(p.draws), p.draws["theta_trans"].shape
    (['mu', 'tau', 'theta_trans'], (10, 1000, 8))
    """
    if name not in _MODELS:
        raise ValueError(f"unknown posterior {name!r}; the shipped ones are {', '.join(NAMES)}.")
    folder = _root(root)
    info = json.loads(_existing(folder / "posteriors" / f"{name}.json").read_text())
    data = _read_zip(folder / "data" / f"{info['data_name']}.json.zip")
    draws = _read_zip(folder / "draws" / f"{name}.json.zip")
    model = _MODELS[name]
    wanted = inspect.signature(model).parameters  # the data has columns the model does not use
    kwargs = {
        k: v if isinstance(v, int) else jnp.asarray(v) for k, v in data.items() if k in wanted
    }
    return Posterior(name, model, kwargs, _site_draws(name, draws))


def kidiq_exact_draws(
    posterior: Posterior, rng: np.random.Generator, num_draws: int = 10000
) -> dict[str, np.ndarray]:
    """I.i.d. draws of ``kidiq-kidscore_momiq``'s posterior in closed form, as 10 chains.

    With the flat prior on beta, beta integrates out to :math:`\\sigma^2 |X^\\top X|^{-1/2}`
    times the likelihood at the least-squares fit :math:`\\hat\\beta`, so
    :math:`p(\\sigma) \\propto (1 + (\\sigma/2.5)^2)^{-1}\\,\\sigma^{-(N-2)}
    \\exp(-\\mathrm{RSS}/2\\sigma^2)` is sampled by inverting its CDF on a fine grid, then
    :math:`\\beta \\mid \\sigma \\sim \\mathcal N(\\hat\\beta, \\sigma^2 (X^\\top X)^{-1})`.
    posteriordb's reference draws sit 2.3 standard errors from this posterior's mean along its
    narrowest direction (docs/validation.md); these are the exact check.

    Parameters
    ----------
    posterior : Posterior
        ``load("kidiq-kidscore_momiq")`` (its data).
    rng : numpy Generator
        Source of the uniforms (sigma) and normals (beta).
    num_draws : int
        Total draws, a multiple of 10.

    Returns
    -------
    dict
        ``{"beta": (10, num_draws / 10, 2), "sigma": (10, num_draws / 10)}``.

    Examples
    --------
    >>> draws = kidiq_exact_draws(load("kidiq-kidscore_momiq"), np.random.default_rng(0), 100)
    >>> draws["beta"].shape, draws["sigma"].shape
    ((10, 10, 2), (10, 10))
    """
    y = np.asarray(posterior.model_kwargs["kid_score"], np.float64)
    X = np.stack([np.ones_like(y), np.asarray(posterior.model_kwargs["mom_iq"], np.float64)], 1)
    bhat = np.linalg.lstsq(X, y, rcond=None)[0]
    rss, n = np.sum((y - X @ bhat) ** 2), len(y)
    grid = np.linspace(14.0, 23.0, 200001)
    log_marginal = -np.log1p((grid / 2.5) ** 2) - (n - 2) * np.log(grid) - rss / (2 * grid**2)
    cdf = np.cumsum(np.exp(log_marginal - log_marginal.max()))
    sigma = np.interp(rng.uniform(size=num_draws), cdf / cdf[-1], grid)
    L = np.linalg.cholesky(np.linalg.inv(X.T @ X))
    beta = bhat + sigma[:, None] * (rng.normal(size=(num_draws, 2)) @ L.T)
    return {"beta": beta.reshape(10, -1, 2), "sigma": sigma.reshape(10, -1)}


def _value(v: Any) -> Any:
    return v if isinstance(v, int) else jnp.asarray(v)


def _root(root: str | Path | None) -> Path:
    if root is not None:
        return Path(root)
    return Path(str(resources.files("numpyro_dsd") / "data" / "posteriordb"))


@cache
def _read_zip_cached(path: str) -> Any:
    with zipfile.ZipFile(path) as zf:
        (member,) = (n for n in zf.namelist() if n.endswith(".json"))
        return json.loads(zf.read(member))


def _existing(path: Path) -> Path:
    if not path.exists():
        raise ValueError(f"{path} is missing; give root= a posteriordb folder with it.")
    return path


def _read_zip(path: Path) -> Any:
    return _read_zip_cached(str(_existing(path)))


def _site_draws(name: str, chains: list[dict[str, list[float]]]) -> dict[str, np.ndarray]:
    """``{"beta[1]": [...], ...}`` per chain to ``{"beta": (chains, draws, K)}``."""
    columns: dict[str, list[str]] = {}
    for key in chains[0]:
        columns.setdefault(key.split("[")[0], []).append(key)
    out = {}
    for site, keys in columns.items():
        arr = np.array([[chain[k] for k in keys] for chain in chains], dtype=np.float64)
        arr = np.moveaxis(arr, 1, -1)  # (chains, draws, len(keys))
        out[site] = arr if "[" in keys[0] else arr[..., 0]
    if name.startswith("eight_schools"):  # the draws hold the derived theta, not theta_trans
        theta = out.pop("theta")
        out["theta_trans"] = (theta - out["mu"][..., None]) / out["tau"][..., None]
    if name.startswith("garch"):  # the port's latent site is beta1 / (1 - alpha1)
        out["beta1_raw"] = out.pop("beta1") / (1.0 - out["alpha1"])
    return out


# ---------------------------------------------------------------------------------------------
# Perturbations.


def perturb(
    posterior: Posterior,
    kind: str,
    coordinate: int = 0,
    *,
    draws: Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Reference draws made wrong alike in every chain (invisible to R-hat).

    With :math:`x` the flat unconstrained draws (sites in sorted order, as
    :func:`numpyro_dsd.model.targets.model_draws` flattens them), pooled mean :math:`\\bar x` and sd
    :math:`s_j`:

    - ``"widen"``: :math:`x \\mapsto \\bar x + 1.2\\,(x - \\bar x)` (all coordinates);
    - ``"shift"``: :math:`x_j \\mapsto x_j + 0.3\\,s_j`;
    - ``"truncate"``: each chain keeps the draws with :math:`x_j` at or below its own 90%
      quantile (so ``draws`` shrinks to 90%).

    Parameters
    ----------
    posterior : Posterior
        From :func:`load`.
    kind : {"widen", "shift", "truncate"}
        The perturbation.
    coordinate : int
        j, an index into the flat unconstrained vector (ignored by ``"widen"``).
    draws : dict, optional
        Constrained draws to perturb instead of ``posterior.draws``.

    Returns
    -------
    dict
        Constrained draws ``{site: (chains, draws', ...)}``, ready for
        :func:`numpyro_dsd.ksd_diagnostic` with ``posterior.model``.

    Examples
    --------
    >>> p = load("kidiq-kidscore_momiq")
    >>> wide = perturb(p, "widen")
    >>> ratio = np.std(np.log(wide["sigma"])) / np.std(np.log(p.draws["sigma"]))
    >>> round(float(ratio), 6)
    1.2
    >>> perturb(p, "truncate", coordinate=2)["sigma"].shape
    (10, 900)
    """
    if kind not in PERTURBATIONS:
        raise ValueError(f"kind must be one of {PERTURBATIONS}; got {kind!r}.")
    source = posterior.draws if draws is None else draws
    flat = model_draws(posterior.model, source, model_kwargs=posterior.model_kwargs)
    x = np.asarray(flat.x, dtype=np.float64)
    d = x.shape[-1]
    if kind != "widen" and not 0 <= coordinate < d:
        raise ValueError(f"coordinate must be in [0, {d}); got {coordinate}.")
    pooled = x.reshape(-1, d)
    if kind == "widen":
        mean = pooled.mean(axis=0)
        x = mean + 1.2 * (x - mean)
    elif kind == "shift":
        x = x.copy()
        x[..., coordinate] += 0.3 * pooled[:, coordinate].std(ddof=1)
    else:
        x = _truncate(x, coordinate)
    return _constrain(posterior, flat.unravel, x)


def _truncate(x: np.ndarray, j: int) -> np.ndarray:
    keep = int(np.floor(0.9 * x.shape[1]))
    order = np.argsort(x[..., j], axis=1, kind="stable")[:, :keep]
    order = np.sort(order, axis=1)  # keep the chains' draw order
    return np.take_along_axis(x, order[..., None], axis=1)


def _constrain(posterior: Posterior, unravel: Any, x: np.ndarray) -> dict[str, np.ndarray]:
    def one(flat: jax.Array) -> dict[str, jax.Array]:
        return constrain_fn(
            numpyro.handlers.seed(posterior.model, 0), (), posterior.model_kwargs, unravel(flat)
        )

    out = jax.jit(jax.vmap(jax.vmap(one)))(jnp.asarray(x))
    return {k: np.asarray(v) for k, v in out.items()}
