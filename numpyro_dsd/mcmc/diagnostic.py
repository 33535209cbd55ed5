"""The MCMC sample-quality diagnostic: KSD per chain and pooled, a calibrated test, the curve.

For draws :math:`x^{(c)}_{1:n}` of chains :math:`c = 1..C` and their scores,
:func:`ksd_diagnostic` reports

- ``ksd[c]`` :math:`= \\sqrt{\\hat V}` of chain c and ``ksd_pooled`` of all draws (math.md §2.1);
- ``pvalue[c]`` and ``pvalue_pooled``: the wild-bootstrap test of :math:`H_0: q = p` with the
  sign process for autocorrelated draws (math.md §2.6, :mod:`numpyro_dsd.mcmc.bootstrap`);
- ``ksd_trace[c, m]`` :math:`= \\sqrt{\\hat V_m}` of the first m draws at log-spaced m
  (math.md §2.7, :mod:`numpyro_dsd.mcmc.prefix`).

One kernel serves every number: a data-dependent preconditioner is resolved once on the pooled
points (latent points for a flow) and frozen, so chains are comparable (math.md §8).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from numpyro_dsd.mcmc.bootstrap import DEFAULT_KAPPA, chain_signs, wild_bootstrap
from numpyro_dsd.mcmc.inputs import Draws, resolve_diffusion, resolve_draws
from numpyro_dsd.mcmc.prefix import prefix_ksd_squared, prefix_points
from numpyro_dsd.stein.diffusion import Diffusion
from numpyro_dsd.stein.engine import prepare
from numpyro_dsd.stein.kernels import IMQ, Gaussian

__all__ = ["DEFAULT_KERNEL", "ksd_diagnostic", "diagnose_draws"]

#: The diagnostic's kernel: IMQ (c = 1, beta = -1/2), bandwidth the median pairwise distance of
#: the pooled points, frozen.
DEFAULT_KERNEL = IMQ(precond="med")


def ksd_diagnostic(
    data: Any,
    model: Callable[..., Any] | None = None,
    model_args: tuple = (),
    model_kwargs: Mapping[str, Any] | None = None,
    *,
    diffusion: str | Diffusion = "identity",
    kernel: IMQ | Gaussian | None = None,
    test: bool = True,
    rng_key: jax.Array | None = None,
    n_boot: int = 1000,
    flip_prob: float | str = "auto",
    kappa: float = DEFAULT_KAPPA,
    trace_points: int = 20,
    flow_kwargs: Mapping[str, Any] | None = None,
    block_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> xr.Dataset:
    """KSD of MCMC draws against the model's posterior, per chain and pooled, with a p-value.

    .. math::
        \\mathrm{ksd}_c = \\Big(n^{-2}\\sum_{i,j} k^0(x^{(c)}_i, x^{(c)}_j)\\Big)^{1/2},
        \\qquad p = \\frac{1 + \\#\\{m: B_m \\ge n\\hat V\\}}{1 + N_{boot}},

    with :math:`k^0` the diffusion Stein kernel (math.md §2.3) in the model's unconstrained space
    and :math:`B_m` the sign-process wild-bootstrap replicates (math.md §2.6).

    Parameters
    ----------
    data : MCMC, dict, InferenceData or DataTree
        A NumPyro ``MCMC`` after ``run`` (model and arguments taken from it); draws as
        ``mcmc.get_samples(group_by_chain=True)`` returns them, with ``model``; an ArviZ
        InferenceData / DataTree with a ``posterior`` group, with ``model``; or one with a
        ``stein_inputs`` group (:func:`numpyro_dsd.arviz.convert.add_stein_inputs`), no model needed.
    model, model_args, model_kwargs
        The NumPyro model and its arguments, where ``data`` does not carry them.
    diffusion : {"identity", "precond", "flow"} or a diffusion object
        :math:`M(x)`: identity (Langevin KSD), the Cholesky factor of the pooled sample
        covariance, a flow fitted to the posterior (math.md §3), or e.g. ``FlowDiffusion(T)``.
    kernel : IMQ or Gaussian, optional
        Default :data:`DEFAULT_KERNEL`; its preconditioner is frozen on the pooled points.
    test : bool
        Compute p-values (otherwise they are NaN and no bootstrap runs).
    rng_key : jax.Array, optional
        For the bootstrap signs and a flow fit; default ``jax.random.key(0)``.
    n_boot : int
        Bootstrap replicates (p-values resolve to :math:`1/(1 + N_{boot})`).
    flip_prob, kappa
        Sign-process flip probability, ``"auto"`` (from each chain's ESS, memory factor
        ``kappa``) or a number (0.5: i.i.d. signs, for independent draws).
    trace_points : int
        Number of log-spaced prefix lengths of ``ksd_trace``.
    flow_kwargs : dict, optional
        Passed to the flow fitting function for ``diffusion="flow"``.
    block_size, devices
        As for :func:`numpyro_dsd.ksd`.

    Returns
    -------
    xarray.Dataset
        ``ksd``, ``pvalue``, ``n``, ``flip_prob`` (dim ``chain``), ``ksd_pooled``,
        ``pvalue_pooled`` (scalars), ``ksd_trace`` (``chain``, ``draw``: prefix length), and
        the settings as attributes. Store it with
        :func:`numpyro_dsd.arviz.convert.add_diagnostics` (group ``stein_diagnostics``).

    Examples
    --------
    >>> import numpyro, numpyro.distributions as dist
    >>> def model():
    ...     numpyro.sample("mu", dist.Normal(0.0, 1.0))
    >>> draws = {"mu": np.random.default_rng(0).normal(size=(2, 500))}  # exact draws
    >>> ds = ksd_diagnostic(draws, model, n_boot=200)
    >>> sorted(ds.data_vars)
    ['flip_prob', 'ksd', 'ksd_pooled', 'ksd_trace', 'n', 'pvalue', 'pvalue_pooled']
    >>> bool(ds.pvalue_pooled > 0.01)
    True
    """
    draws = resolve_draws(data, model, model_args, model_kwargs)
    key = jax.random.key(0) if rng_key is None else rng_key
    k_flow, k_boot = jax.random.split(key)
    diff = resolve_diffusion(diffusion, draws, rng_key=k_flow, flow_kwargs=flow_kwargs)
    return diagnose_draws(
        draws,
        diff,
        kernel=kernel,
        test=test,
        rng_key=k_boot,
        n_boot=n_boot,
        flip_prob=flip_prob,
        kappa=kappa,
        trace_points=trace_points,
        block_size=block_size,
        devices=devices,
        diffusion_name=diffusion if isinstance(diffusion, str) else None,
    )


def diagnose_draws(
    draws: Draws,
    diffusion: Diffusion,
    *,
    kernel: IMQ | Gaussian | None = None,
    test: bool = True,
    rng_key: jax.Array | None = None,
    n_boot: int = 1000,
    flip_prob: float | str = "auto",
    kappa: float = DEFAULT_KAPPA,
    trace_points: int = 20,
    block_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    diffusion_name: str | None = None,
) -> xr.Dataset:
    """:func:`ksd_diagnostic` on resolved :class:`~numpyro_dsd.mcmc.inputs.Draws` and a diffusion
    object (the functional core: no model handling, no flow fitting)."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer; got {n_boot}.")
    kernel = DEFAULT_KERNEL if kernel is None else kernel
    x, s = draws.x, draws.scores
    d = x.shape[-1]
    pooled = (x.reshape(-1, d), s.reshape(-1, d))
    frozen = kernel.frozen(diffusion.features(*pooled).x)
    opts = {"block_size": block_size, "devices": devices}
    ms = prefix_points(draws.num_draws, trace_points)
    if test:
        key = jax.random.key(0) if rng_key is None else rng_key
        signs, probs = chain_signs(key, np.asarray(x), np.asarray(s), n_boot, flip_prob, kappa)
        signs = signs.reshape(draws.num_chains, draws.num_draws, n_boot)
    per_chain = []
    for c in range(draws.num_chains):
        sk = prepare(x[c], s[c], kernel=frozen, diffusion=diffusion)
        v = prefix_ksd_squared(sk, **opts)
        p = wild_bootstrap(sk, signs[c], **opts).pvalue if test else jnp.nan
        per_chain.append((v[-1], v[ms - 1], p))
    sk = prepare(*pooled, kernel=frozen, diffusion=diffusion)
    if test:
        res = wild_bootstrap(sk, signs.reshape(-1, n_boot), **opts)
        v_pooled, p_pooled = res.statistic / sk.n, res.pvalue
    else:
        v_pooled = prefix_ksd_squared(sk, **opts)[-1]
        p_pooled, probs = jnp.nan, (np.nan,) * draws.num_chains
    attrs = _attrs(kernel, diffusion, diffusion_name, test, n_boot, kappa, flip_prob)
    return _dataset(per_chain, v_pooled, p_pooled, probs, draws, ms, attrs)


def _sqrt(v: Any) -> np.ndarray:
    return np.sqrt(np.maximum(np.asarray(v, dtype=float), 0.0))


def _dataset(
    per_chain: list[tuple[Any, Any, Any]],
    v_pooled: Any,
    p_pooled: Any,
    probs: Sequence[float],
    draws: Draws,
    ms: np.ndarray,
    attrs: dict[str, Any],
) -> xr.Dataset:
    v, trace, p = (np.stack([np.asarray(t[k], dtype=float) for t in per_chain]) for k in range(3))
    chain = np.arange(draws.num_chains)
    return xr.Dataset(
        {
            "ksd": ("chain", _sqrt(v)),
            "pvalue": ("chain", p),
            "n": ("chain", np.full(draws.num_chains, draws.num_draws)),
            "flip_prob": ("chain", np.asarray(probs, dtype=float)),
            "ksd_pooled": ((), float(_sqrt(v_pooled))),
            "pvalue_pooled": ((), float(p_pooled)),
            "ksd_trace": (("chain", "draw"), _sqrt(trace)),
        },
        coords={"chain": chain, "draw": ms},
        attrs=attrs,
    )


def _attrs(
    kernel: IMQ | Gaussian,
    diffusion: Diffusion,
    name: str | None,
    test: bool,
    n_boot: int,
    kappa: float,
    flip_prob: float | str,
) -> dict[str, Any]:
    settings = {**kernel.settings(), **diffusion.settings()}
    if name is not None:  # "flow" rather than the flow's repr; the object stays on record
        settings["diffusion_object"], settings["diffusion"] = settings["diffusion"], name
    settings.update(
        statistic="V",
        space="unconstrained",
        test="wild bootstrap, sign process (Chwialkowski et al. 2016)" if test else "none",
        n_boot=int(n_boot) if test else 0,
        kappa=float(kappa),
        flip_prob_rule=str(flip_prob),
        package="numpyro_dsd",
    )
    return {k: v if isinstance(v, int | float | str) else str(v) for k, v in settings.items()}
