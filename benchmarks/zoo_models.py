"""Models and samplers of the benchmark zoo (``benchmarks/zoo.py``).

Each :class:`Case` holds a ``run(seed)`` that samples with NumPyro (4 chains x 1,000 draws after
1,000 warm-up, ``chain_method="sequential"``, key ``jax.random.PRNGKey(seed)``, unless a case
says otherwise) and returns a :class:`Run`: the model and arguments the draws are *diagnosed
against*, the constrained draws ``{site: (chains, draws, ...)}`` and the number of divergences.

Data are inline (eight schools, baseball) or synthetic with a fixed numpy seed; nothing is
downloaded. The models follow NumPyro's ``examples/``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.handlers import scale
from numpyro.infer import MCMC, NUTS, init_to_value

CHAINS, WARMUP, SAMPLES = 4, 1000, 1000
MUSTS = ("pass", "fail", "not pass", "not fail", "report")

# --- data --------------------------------------------------------------------------------------

EIGHT_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
EIGHT_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
# Efron & Morris (1975): hits in the first 45 at-bats of the 1970 season, 18 players.
BASEBALL_HITS = np.array([18, 17, 16, 15, 14, 14, 13, 12, 11, 11, 10, 10, 10, 10, 10, 9, 8, 7])
BASEBALL_AT_BATS = np.full(18, 45)


def _horseshoe_data(n: int = 50, p: int = 10, nonzero: int = 3, noise: float = 0.05) -> tuple:
    """As NumPyro's horseshoe_regression.py ``get_data``: 3 coefficients in [0.5, 3], the rest 0."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, p))
    w = 0.5 + 2.5 * rng.uniform(size=nonzero)
    y = X[:, :nonzero] @ w + noise * rng.normal(size=n)
    return X, y


def _volatility_data(t: int = 100) -> np.ndarray:
    """Returns with log-volatility a random walk (step 0.1) and Student-t(8) shocks."""
    rng = np.random.default_rng(0)
    s = np.cumsum(0.1 * rng.normal(size=t)) - 4.0
    return np.exp(s) * rng.standard_t(8.0, size=t)


def _logistic_data(n: int = 500, d: int = 10) -> tuple:
    """Standardised features plus an intercept column (as covtype.py), Bernoulli labels."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d - 1))
    X = np.hstack([(X - X.mean(0)) / X.std(0), np.ones((n, 1))])
    coefs = rng.normal(size=d)
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-X @ coefs))).astype(np.int32)
    return X, y


def _regression_data(n: int = 30) -> tuple:
    """As ``benchmarks/diagnostic_acceptance.py``: d = 3, unit noise."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 3))
    return X, X @ np.array([1.0, -1.0, 0.5]) + rng.normal(size=n)


# Module-level arrays: the same objects every seed, so NumPyro's per-MCMC caches can key on them.
HORSESHOE_X, HORSESHOE_Y = _horseshoe_data()
RETURNS = _volatility_data()
LOGISTIC_X, LOGISTIC_Y = _logistic_data()
REG_X, REG_Y = _regression_data()
HALF = len(REG_Y) // 2

# --- models ------------------------------------------------------------------------------------


def eight_schools_numpyro(J, sigma, y=None):
    """Centred: theta_j ~ N(mu, tau); NumPyro's example with its signature (a Python int J
    sizes the plate)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", J):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def eight_schools(sigma, y=None):
    """:func:`eight_schools_numpyro` with J = len(sigma)."""
    eight_schools_numpyro(len(sigma), sigma, y)


def eight_schools_noncentred(sigma, y=None):
    """Non-centred: theta_raw_j ~ N(0, 1), theta = mu + tau theta_raw (deterministic)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", len(sigma)):
        theta_raw = numpyro.sample("theta_raw", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * theta_raw)
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def baseball(at_bats, hits=None):
    """NumPyro baseball.py ``partially_pooled_with_logit``."""
    loc = numpyro.sample("loc", dist.Normal(-1.0, 1.0))
    scale_ = numpyro.sample("scale", dist.HalfCauchy(1.0))
    with numpyro.plate("player", len(at_bats)):
        alpha = numpyro.sample("alpha", dist.Normal(loc, scale_))
        numpyro.sample("obs", dist.Binomial(at_bats, logits=alpha), obs=hits)


def funnel(dim=10):
    """NumPyro funnel.py: y ~ N(0, 3), x ~ N(0, exp(y / 2)) in dim - 1 dimensions."""
    y = numpyro.sample("y", dist.Normal(0.0, 3.0))
    numpyro.sample("x", dist.Normal(jnp.zeros(dim - 1), jnp.exp(y / 2)))


def horseshoe(X, y=None):
    """NumPyro horseshoe_regression.py ``model_normal_likelihood``."""
    p = X.shape[1]
    lambdas = numpyro.sample("lambdas", dist.HalfCauchy(jnp.ones(p)))
    tau = numpyro.sample("tau", dist.HalfCauchy(jnp.ones(1)))
    unscaled = numpyro.sample("unscaled_betas", dist.Normal(0.0, jnp.ones(p)))
    betas = numpyro.deterministic("betas", tau * lambdas * unscaled)
    prec_obs = numpyro.sample("prec_obs", dist.Gamma(3.0, 1.0))
    numpyro.sample("Y", dist.Normal(X @ betas, 1.0 / jnp.sqrt(prec_obs)), obs=y)


def stochastic_volatility(returns):
    """NumPyro stochastic_volatility.py."""
    sigma = numpyro.sample("sigma", dist.Exponential(50.0))
    s = numpyro.sample("s", dist.GaussianRandomWalk(scale=sigma, num_steps=len(returns)))
    nu = numpyro.sample("nu", dist.Exponential(0.1))
    numpyro.sample("r", dist.StudentT(df=nu, loc=0.0, scale=jnp.exp(s)), obs=returns)


def logistic(X, y=None):
    """NumPyro covtype.py's model: coefs ~ N(0, I), y ~ Bernoulli(logits=X coefs)."""
    coefs = numpyro.sample("coefs", dist.Normal(jnp.zeros(X.shape[1]), 1.0))
    numpyro.sample("obs", dist.Bernoulli(logits=X @ coefs), obs=y)


def regression(X, y=None, likelihood_scale=1.0):
    """beta ~ N(0, 2^2 I_3), sigma ~ HalfNormal(2), y ~ N(X beta, sigma); the likelihood can be
    tempered (``likelihood_scale``) for the ``tempered`` sampler."""
    beta = numpyro.sample("beta", dist.Normal(0.0, 2.0).expand([X.shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    with scale(scale=likelihood_scale):
        numpyro.sample("y", dist.Normal(X @ beta, sigma), obs=y)


# --- sampling ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """Draws and the target they are diagnosed against."""

    model: Callable[..., Any]
    model_args: tuple
    draws: dict[str, np.ndarray]
    divergences: int | None
    model_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    """One zoo row: ``must`` is the verdict a sound diagnostic should give (one of MUSTS)."""

    name: str
    what: str
    must: str
    run: Callable[[int], Run]

    def __post_init__(self) -> None:
        if self.must not in MUSTS:
            raise ValueError(f"must is one of {MUSTS}; got {self.must!r}.")


def nuts(model, args, seed, *, kwargs=None, warmup=WARMUP, init=None, **kernel) -> tuple:
    """NUTS draws ``{site: (chains, draws, ...)}`` (numpy) and the divergence count."""
    if init is not None:
        kernel["init_strategy"] = init_to_value(values=init)
    mcmc = MCMC(
        NUTS(model, **kernel),
        num_warmup=warmup,
        num_samples=SAMPLES,
        num_chains=CHAINS,
        chain_method="sequential",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(seed), *args, **(kwargs or {}))
    draws = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    return draws, int(mcmc.get_extra_fields()["diverging"].sum())


def _nuts_case(model, args, **options) -> Callable[[int], Run]:
    def run(seed: int) -> Run:
        return Run(model, args, *nuts(model, args, seed, **options))

    return run


@functools.cache
def regression_tuning() -> tuple[float, Any, dict[str, np.ndarray]]:
    """Step size and inverse mass matrix adapted by a good NUTS run on the regression (one chain,
    key 12345, 2,000 warm-up), and its posterior mean and sd of (beta, log sigma)."""
    mcmc = MCMC(NUTS(regression), num_warmup=2000, num_samples=2000, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(12345), REG_X, REG_Y)
    adapt = mcmc.last_state.adapt_state
    x = mcmc.get_samples()
    z = np.column_stack([np.asarray(x["beta"]), np.log(np.asarray(x["sigma"]))])
    return float(adapt.step_size), adapt.inverse_mass_matrix, {"mean": z.mean(0), "sd": z.std(0)}


def burnin_start(shift: float = 12.0) -> dict[str, np.ndarray]:
    """The posterior mean of (beta, log sigma) moved ``shift`` posterior sds in every coordinate."""
    moments = regression_tuning()[2]
    z = moments["mean"] + shift * moments["sd"]
    return {"beta": z[:3], "sigma": np.exp(z[3])}


def _tuned(seed: int, **options) -> Run:
    step = regression_tuning()[0]
    factor = options.pop("step_factor", 1.0)
    options.setdefault("adapt_step_size", False)
    draws, div = nuts(regression, (REG_X, REG_Y), seed, step_size=factor * step, **options)
    return Run(regression, (REG_X, REG_Y), draws, div)


def burnin(seed: int) -> Run:
    """The tuned sampler without warm-up, from ``burnin_start()``: the transient is kept."""
    inv_mass = regression_tuning()[1]
    return _tuned(
        seed, warmup=0, init=burnin_start(), inverse_mass_matrix=inv_mass, adapt_mass_matrix=False
    )


def fixed_large_step(seed: int) -> Run:
    """NUTS with 1.5x the adapted step size, not adapted (the mass matrix is): still exact."""
    return _tuned(seed, step_factor=1.5)


def tempered(seed: int) -> Run:
    """NUTS on the likelihood raised to the power 0.5, diagnosed against the full model."""
    args = (REG_X, REG_Y)
    draws, div = nuts(regression, args, seed, kwargs={"likelihood_scale": 0.5})
    return Run(regression, args, draws, div)


def half_data(seed: int) -> Run:
    """NUTS on the first half of the data, diagnosed against the model with all of it."""
    draws, div = nuts(regression, (REG_X[:HALF], REG_Y[:HALF]), seed)
    return Run(regression, (REG_X, REG_Y), draws, div)


REG = (REG_X, REG_Y)

CASES: dict[str, Case] = {
    c.name: c
    for c in [
        Case(
            "eight_schools_centred",
            "eight schools, centred; NUTS",
            "not pass",
            _nuts_case(eight_schools, (EIGHT_SIGMA, EIGHT_Y)),
        ),
        Case(
            "eight_schools_noncentred",
            "eight schools, non-centred; NUTS",
            "pass",
            _nuts_case(eight_schools_noncentred, (EIGHT_SIGMA, EIGHT_Y)),
        ),
        Case(
            "baseball",
            "Efron-Morris baseball, logit partial pooling; NUTS",
            "not pass",
            _nuts_case(baseball, (BASEBALL_AT_BATS, BASEBALL_HITS)),
        ),
        Case("funnel", "Neal's funnel, centred, d = 10; NUTS", "not pass", _nuts_case(funnel, ())),
        Case(
            "horseshoe",
            "horseshoe regression, N = 50, P = 10; NUTS, 500 warm-up",
            "report",
            _nuts_case(horseshoe, (HORSESHOE_X, HORSESHOE_Y), warmup=500),
        ),
        Case(
            "stochastic_volatility",
            "stochastic volatility, T = 100 (d = 102); NUTS",
            "pass",
            _nuts_case(stochastic_volatility, (RETURNS,)),
        ),
        Case(
            "logistic",
            "logistic regression, N = 500, d = 10; NUTS",
            "pass",
            _nuts_case(logistic, (LOGISTIC_X, LOGISTIC_Y)),
        ),
        Case("exact", "regression (d = 4); NUTS defaults", "pass", _nuts_case(regression, REG)),
        Case(
            "stuck",
            "regression; step 1e-3 fixed, tree depth 2",
            "not pass",
            _nuts_case(regression, REG, step_size=1e-3, adapt_step_size=False, max_tree_depth=2),
        ),
        Case(
            "burnin",
            "regression; no warm-up, tuned NUTS from 12 sd away",
            "not pass",
            burnin,
        ),
        Case(
            "tree_depth_1",
            "regression; NUTS max_tree_depth = 1",
            "not fail",
            _nuts_case(regression, REG, max_tree_depth=1),
        ),
        Case(
            "fixed_large_step",
            "regression; step 1.5x adapted, fixed",
            "pass",
            fixed_large_step,
        ),
        Case("tempered", "regression; likelihood^0.5 sampled", "fail", tempered),
        Case("half_data", "regression; first half of the data sampled", "fail", half_data),
    ]
}
