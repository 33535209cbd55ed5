"""The MCMC sample-quality diagnostic: KSD per chain and pooled, a calibrated test, the curve.

For draws :math:`x^{(c)}_{1:n}` of chains :math:`c = 1..C` and their scores,
:func:`ksd_diagnostic` reports

- ``ksd[c]`` :math:`= \\sqrt{\\hat V}` of chain c and ``ksd_pooled`` of all draws
  (docs/math.md §2.1);
- ``pvalue[c]`` and ``pvalue_pooled``: the wild-bootstrap test of :math:`H_0: q = p` with the
  sign process for autocorrelated draws (docs/math.md §2.6, :mod:`numpyro_dsd.mcmc.bootstrap`);
- ``ksd_trace[c, m]`` :math:`= \\sqrt{\\hat V_m}` of the first m draws at log-spaced m, over
  dimensions ``(chain, prefix)`` with the prefix length m as the ``prefix`` coordinate
  (docs/math.md §2.7, :mod:`numpyro_dsd.mcmc.prefix`).

One kernel serves every number: a data-dependent bandwidth is resolved once on the pooled
points (latent points for a flow) and frozen, so chains are comparable (docs/math.md §8).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from numpyro_dsd.mcmc.bootstrap import DEFAULT_KAPPA, chain_signs, wild_bootstrap
from numpyro_dsd.mcmc.inputs import Draws, canonical_diffusion, resolve_diffusion, resolve_draws
from numpyro_dsd.mcmc.prefix import prefix_ksd_squared, prefix_points
from numpyro_dsd.stein.diffusion import Diffusion
from numpyro_dsd.stein.engine import checked_features, from_features, take_features
from numpyro_dsd.stein.kernels import IMQ, Gaussian, default_kernel
from numpyro_dsd.vocabulary import CHAIN, PREFIX, renamed_arguments, rng_key_or_default

__all__ = ["DEFAULT_KERNEL", "ksd_diagnostic", "diagnose_draws"]

#: The diagnostic's kernel, :func:`~numpyro_dsd.stein.kernels.default_kernel` (IMQ, c = 1,
#: beta = -1/2, bandwidth the median pairwise distance), frozen on the pooled points. Kept for
#: code that imports it; the default is defined by ``default_kernel``.
DEFAULT_KERNEL = default_kernel()


@renamed_arguments(n_boot="num_bootstrap", trace_points="num_prefixes")
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
    num_bootstrap: int = 1000,
    flip_prob: float | str = "auto",
    kappa: float = DEFAULT_KAPPA,
    num_prefixes: int = 20,
    flow_kwargs: Mapping[str, Any] | None = None,
    block_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> xr.Dataset:
    """KSD of MCMC draws against the model's posterior, per chain and pooled, with a p-value.

    .. math::
        \\mathrm{ksd}_c = \\Big(n^{-2}\\sum_{i,j} k^0(x^{(c)}_i, x^{(c)}_j)\\Big)^{1/2},
        \\qquad p = \\frac{1 + \\#\\{m: B_m \\ge n\\hat V\\}}{1 + N_{boot}},

    with :math:`k^0` the diffusion Stein kernel (docs/math.md §2.3) in the model's unconstrained
    space and :math:`B_m` the sign-process wild-bootstrap replicates (docs/math.md §2.6).

    Parameters
    ----------
    data : MCMC, dict, InferenceData or DataTree
        A NumPyro ``MCMC`` after ``run`` (model and arguments taken from it); draws as
        ``mcmc.get_samples(group_by_chain=True)`` returns them, with ``model``; an ArviZ
        InferenceData / DataTree with a ``posterior`` group, with ``model``; or one with a
        ``stein_inputs`` group (:func:`numpyro_dsd.arviz.convert.add_stein_inputs`), no model
        needed.
    model, model_args, model_kwargs
        The NumPyro model and its arguments, where ``data`` does not carry them.
    diffusion : {"identity", "covariance", "flow"} or a diffusion object
        :math:`M(x)`: identity (Langevin KSD), the Cholesky factor of the pooled sample
        covariance, a flow fitted to the posterior (docs/math.md §3), or e.g. ``FlowDiffusion(T)``.
        ``"precond"`` is the deprecated name of ``"covariance"``.
    kernel : IMQ or Gaussian, optional
        Default :func:`~numpyro_dsd.stein.kernels.default_kernel`; its bandwidth is frozen on
        the pooled points.
    test : bool
        Compute p-values (otherwise they are NaN and no bootstrap runs).
    rng_key : jax.Array, optional
        Split into one sub-key for a flow fit and one for the bootstrap signs; None means
        ``jax.random.key(0)`` (:mod:`numpyro_dsd.vocabulary`'s key rule). Recorded in the
        ``rng_key`` attribute.
    num_bootstrap : int
        Bootstrap replicates (p-values resolve to :math:`1/(1 + N_{boot})`); ``n_boot`` is its
        deprecated name.
    flip_prob, kappa
        Sign-process flip probability, ``"auto"`` (from each chain's ESS, memory factor
        ``kappa``) or a number (0.5: i.i.d. signs, for independent draws).
    num_prefixes : int
        Number of log-spaced prefix lengths of ``ksd_trace``; ``trace_points`` is its
        deprecated name.
    flow_kwargs : dict, optional
        Passed to the flow fitting function for ``diffusion="flow"``.
    block_size, devices
        As for :func:`numpyro_dsd.ksd`.

    Returns
    -------
    xarray.Dataset
        ``ksd``, ``pvalue``, ``n``, ``flip_prob`` (dim ``chain``), ``ksd_pooled``,
        ``pvalue_pooled`` (scalars), ``ksd_trace`` (dims ``chain``, ``prefix``; the ``prefix``
        coordinate is the prefix length m), and the settings as attributes (kernel, bandwidth,
        diffusion, test, ``num_bootstrap``, ``rng_key`` ...). Store it with
        :func:`numpyro_dsd.arviz.convert.add_diagnostics` (group ``stein_diagnostics``).

    Examples
    --------
    >>> import numpyro, numpyro.distributions as dist
    >>> def model():
    ...     numpyro.sample("mu", dist.Normal(0.0, 1.0))
    >>> draws = {"mu": np.random.default_rng(0).normal(size=(2, 500))}  # exact draws
    >>> ds = ksd_diagnostic(draws, model, num_bootstrap=200)
    >>> sorted(ds.data_vars)
    ['flip_prob', 'ksd', 'ksd_pooled', 'ksd_trace', 'n', 'pvalue', 'pvalue_pooled']
    >>> ds.ksd_trace.dims
    ('chain', 'prefix')
    >>> ds.attrs["rng_key"]
    'jax.random.key(0) (default: rng_key=None); split into (flow fit, bootstrap signs)'
    >>> bool(ds.pvalue_pooled > 0.01)
    True
    """
    diffusion = canonical_diffusion(diffusion, stacklevel=5)
    draws = resolve_draws(data, model, model_args, model_kwargs)
    key, record = rng_key_or_default(rng_key)
    k_flow, k_boot = jax.random.split(key)
    diff = resolve_diffusion(diffusion, draws, rng_key=k_flow, flow_kwargs=flow_kwargs)
    ds = diagnose_draws(
        draws,
        diff,
        kernel=kernel,
        test=test,
        rng_key=k_boot,
        num_bootstrap=num_bootstrap,
        flip_prob=flip_prob,
        kappa=kappa,
        num_prefixes=num_prefixes,
        block_size=block_size,
        devices=devices,
        diffusion_name=diffusion if isinstance(diffusion, str) else None,
    )
    ds.attrs["rng_key"] = f"{record}; split into (flow fit, bootstrap signs)"
    return ds


@renamed_arguments(n_boot="num_bootstrap", trace_points="num_prefixes")
def diagnose_draws(
    draws: Draws,
    diffusion: Diffusion,
    *,
    kernel: IMQ | Gaussian | None = None,
    test: bool = True,
    rng_key: jax.Array | None = None,
    num_bootstrap: int = 1000,
    flip_prob: float | str = "auto",
    kappa: float = DEFAULT_KAPPA,
    num_prefixes: int = 20,
    block_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    diffusion_name: str | None = None,
) -> xr.Dataset:
    """:func:`ksd_diagnostic` on resolved :class:`~numpyro_dsd.mcmc.inputs.Draws` and a diffusion
    object (the functional core: no model handling, no flow fitting). ``rng_key`` draws the
    bootstrap signs (None: ``jax.random.key(0)``), recorded in the ``rng_key`` attribute."""
    if num_bootstrap < 1:
        raise ValueError(f"num_bootstrap must be a positive integer; got {num_bootstrap}.")
    kernel = default_kernel() if kernel is None else kernel
    x, s = draws.x, draws.scores
    d, n = x.shape[-1], draws.num_draws
    feats = checked_features(diffusion, x.reshape(-1, d), s.reshape(-1, d))  # once per draw
    frozen = kernel.frozen(feats.x)
    settings = diffusion.settings()
    opts = {"block_size": block_size, "devices": devices}
    ms = prefix_points(draws.num_draws, num_prefixes)
    key, record = rng_key_or_default(rng_key)
    if test:
        signs, probs = chain_signs(
            key, np.asarray(x), np.asarray(s), num_bootstrap, flip_prob, kappa
        )
        signs = signs.reshape(draws.num_chains, draws.num_draws, num_bootstrap)
    per_chain = []
    for c in range(draws.num_chains):
        sk = from_features(take_features(feats, slice(c * n, (c + 1) * n)), frozen, settings)
        v = prefix_ksd_squared(sk, **opts)
        p = wild_bootstrap(sk, signs[c], **opts).pvalue if test else jnp.nan
        per_chain.append((v[-1], v[ms - 1], p))
    sk = from_features(feats, frozen, settings)
    if test:
        res = wild_bootstrap(sk, signs.reshape(-1, num_bootstrap), **opts)
        v_pooled, p_pooled = res.statistic / sk.n, res.pvalue
    else:
        v_pooled = prefix_ksd_squared(sk, **opts)[-1]
        p_pooled, probs = jnp.nan, (np.nan,) * draws.num_chains
    attrs = _attrs(kernel, diffusion, diffusion_name, test, num_bootstrap, kappa, flip_prob)
    attrs["rng_key"] = record
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
            "ksd": (CHAIN, _sqrt(v)),
            "pvalue": (CHAIN, p),
            "n": (CHAIN, np.full(draws.num_chains, draws.num_draws)),
            "flip_prob": (CHAIN, np.asarray(probs, dtype=float)),
            "ksd_pooled": ((), float(_sqrt(v_pooled))),
            "pvalue_pooled": ((), float(p_pooled)),
            "ksd_trace": ((CHAIN, PREFIX), _sqrt(trace)),
        },
        coords={CHAIN: chain, PREFIX: ms},
        attrs=attrs,
    )


def _attrs(
    kernel: IMQ | Gaussian,
    diffusion: Diffusion,
    name: str | None,
    test: bool,
    num_bootstrap: int,
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
        num_bootstrap=int(num_bootstrap) if test else 0,
        kappa=float(kappa),
        flip_prob_rule=str(flip_prob),
        package="numpyro_dsd",
    )
    return {k: v if isinstance(v, int | float | str) else str(v) for k, v in settings.items()}
