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
from tqdm.auto import tqdm

from numpyro_dsd._validation import positive_int
from numpyro_dsd.mcmc.bootstrap import (
    DEFAULT_KAPPA,
    chain_signs,
    check_test_options,
    memory_series,
    nystrom_bootstrap,
    wild_bootstrap,
)
from numpyro_dsd.mcmc.inputs import (
    Draws,
    canonical_diffusion,
    check_num_draws,
    resolve_diffusion,
    resolve_draws,
)
from numpyro_dsd.mcmc.moments import MomentTest, moment_tests
from numpyro_dsd.mcmc.prefix import prefix_ksd_squared, prefix_points
from numpyro_dsd.mcmc.stationarity import MIN_DRAWS, Stationarity, stationarity
from numpyro_dsd.mcmc.verdict import (
    DEFAULT_ALPHA,
    DEFAULT_MIN_ESS,
    Evidence,
    Verdict,
    check_level,
    verdicts,
)
from numpyro_dsd.stein.diffusion import Diffusion
from numpyro_dsd.stein.engine import (
    SteinKernel,
    checked_features,
    from_features,
    take_features,
)
from numpyro_dsd.stein.kernels import IMQ, Gaussian, default_kernel
from numpyro_dsd.stein.ksd import Estimator, check_estimator
from numpyro_dsd.stein.nystrom import Nystrom, nystrom, nystrom_squared, prefix_weights
from numpyro_dsd.vocabulary import CHAIN, PREFIX, renamed_arguments, rng_key_or_default

__all__ = ["DEFAULT_KERNEL", "PROGRESS_DELAY", "ksd_diagnostic", "diagnose_draws"]

#: The diagnostic's kernel, :func:`~numpyro_dsd.stein.kernels.default_kernel` (IMQ, c = 1,
#: beta = -1/2, bandwidth the median pairwise distance), frozen on the pooled points. Kept for
#: code that imports it; the default is defined by ``default_kernel``.
DEFAULT_KERNEL = default_kernel()

#: Seconds before the KSD tests' progress bar appears (a quick diagnostic shows none).
PROGRESS_DELAY = 2.0


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
    kappa: float | str = DEFAULT_KAPPA,
    alpha: float = DEFAULT_ALPHA,
    min_ess: float = DEFAULT_MIN_ESS,
    num_prefixes: int = 20,
    flow_kwargs: Mapping[str, Any] | None = None,
    block_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    progress_bar: bool = True,
    estimator: Estimator = "exact",
    num_inducing: int | None = None,
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
        ``mcmc.get_samples(group_by_chain=True)`` returns them, with ``model`` (draws without
        the chain axis are one chain, with a ``UserWarning``); an ArviZ
        InferenceData / DataTree with a ``posterior`` group, with ``model``; or one with a
        ``stein_inputs`` group (:func:`numpyro_dsd.arviz.convert.add_stein_inputs`), no model
        needed. Each chain needs at least
        :data:`~numpyro_dsd.mcmc.stationarity.MIN_DRAWS` (8) draws.
    model, model_args, model_kwargs
        The NumPyro model, its positional arguments (a tuple, as given to ``mcmc.run``) and
        keyword arguments, where ``data`` does not carry them. With an ``MCMC``, NUTS's recorded
        gradients (``extra_fields=("z_grad",)``) serve as the scores only for the run's own
        model and arguments: a ``model`` or arguments given that are not the run's own objects
        are used, and the scores computed from them.
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
        Sign-process flip probability, ``"auto"`` (from the ESS of each chain's Stein row means,
        memory factor ``kappa``: by default ``"auto"``, growing with the chain's length,
        :func:`~numpyro_dsd.mcmc.bootstrap.memory_factor`) or a number (0.5: i.i.d. signs, for
        independent draws).
    alpha : float
        The level of every verdict (default 0.05; stored in the ``alpha`` attribute).
    min_ess : float
        Bulk-ESS floor per chain (the pooled draws need ``min_ess`` times the number of
        chains) below which a verdict cannot be "pass".
    num_prefixes : int
        Number of log-spaced prefix lengths of ``ksd_trace``; ``trace_points`` is its
        deprecated name.
    flow_kwargs : dict, optional
        Passed to the flow fitting function for ``diffusion="flow"``.
    block_size, devices
        As for :func:`numpyro_dsd.ksd`.
    progress_bar : bool
        Progress bars, as NumPyro shows them (on stderr): the flow fit's (``diffusion="flow"``;
        ``flow_kwargs={"progress_bar": False}`` turns it off alone) and the KSD tests', one step
        per chain and one for the pooled draws, shown only when they take over
        :data:`~numpyro_dsd.mcmc.diagnostic.PROGRESS_DELAY` seconds.
    estimator : {"exact", "nystrom"}
        ``"nystrom"``: every KSD, curve and test from the Nyström projection
        (:mod:`numpyro_dsd.stein.nystrom`), :math:`O(nm)` per chain instead of :math:`O(n^2)`,
        for long chains (:math:`10^5` draws and more); its error and its test's size on
        autocorrelated chains: docs/scale.md. Each chain and the pooled draws get their own
        inducing points.
    num_inducing : int, optional
        m per chain (and for the pooled draws) with ``estimator="nystrom"``; default
        :func:`~numpyro_dsd.stein.nystrom.default_num_inducing` of the number of draws.

    Returns
    -------
    xarray.Dataset
        Over ``chain``, and as ``*_pooled`` scalars for all draws together:

        - ``verdict``: ``"pass"``, ``"fail"`` or ``"inconclusive"`` at level ``alpha``, and
          ``reason``, e.g. ``"KSD test p=0.003 (...)"``,
          ``"Stein moment test: spread ratio 1.44 (coordinate 0) ..."``,
          ``"not stationary (start vs end): split-R̂ 1.002 (...)"``, ``"ESS 4 < 100"``
          (the rule: :mod:`numpyro_dsd.mcmc.verdict`, docs/math.md §2.9; Holm over the
          chains);
        - ``ksd`` and ``pvalue`` (the KSD test); ``ksd_ratio``, the statistic over the median
          of its bootstrap null: about 1 for a good run, far above 1 for a bad one, and
          comparable between chains and pooled;
        - ``rhat``, ``ess``, ``pvalue_stationarity``: rank-normalised split-R̂, bulk ESS
          and the stationarity test (:mod:`numpyro_dsd.mcmc.stationarity`);
        - ``pvalue_moments``: the Stein moment test, which sees a spread too wide or too
          narrow (:mod:`numpyro_dsd.mcmc.moments`); the attribute ``moments_untested`` names
          the coordinates it leaves out because their Stein products are too heavy-tailed
          (Pareto :math:`\\hat k > 0.7`, e.g. the centred eight schools);
        - ``n``, ``flip_prob`` (per chain), ``ksd_trace`` (dims ``chain``, ``prefix``; the
          ``prefix`` coordinate is the prefix length m);

        and the settings as attributes (kernel, bandwidth, diffusion, ``alpha``, ``min_ess``,
        ``num_bootstrap``, ``rng_key`` ...). Store it with
        :func:`numpyro_dsd.arviz.convert.add_diagnostics` (group ``stein_diagnostics``).

    Examples
    --------
    >>> import numpyro, numpyro.distributions as dist
    >>> def model():
    ...     numpyro.sample("mu", dist.Normal(0.0, 1.0))
    >>> draws = {"mu": np.random.default_rng(0).normal(size=(2, 500))}  # exact draws
    >>> ds = ksd_diagnostic(draws, model, num_bootstrap=200)
    >>> str(ds.verdict_pooled.values), ds.attrs["alpha"]
    ('pass', 0.05)
    >>> ds.ksd_trace.dims
    ('chain', 'prefix')
    >>> ds.attrs["rng_key"]
    'jax.random.key(0) (default: rng_key=None); split into (flow fit, bootstrap signs)'
    """
    diffusion = canonical_diffusion(diffusion, stacklevel=5)
    key, record = rng_key_or_default(rng_key)
    _check_options(num_bootstrap, flip_prob, kappa, alpha, min_ess, num_prefixes)
    check_estimator(estimator, num_inducing)
    draws = resolve_draws(data, model, model_args, model_kwargs, min_draws=MIN_DRAWS)
    k_flow, k_boot = jax.random.split(key)
    flow_kwargs = {"progress_bar": progress_bar, **(flow_kwargs or {})}
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
        alpha=alpha,
        min_ess=min_ess,
        num_prefixes=num_prefixes,
        block_size=block_size,
        devices=devices,
        diffusion_name=diffusion if isinstance(diffusion, str) else None,
        progress_bar=progress_bar,
        estimator=estimator,
        num_inducing=num_inducing,
    )
    parts = "flow fit, bootstrap signs" + (", inducing points" if estimator == "nystrom" else "")
    ds.attrs["rng_key"] = f"{record}; split into ({parts})"
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
    kappa: float | str = DEFAULT_KAPPA,
    alpha: float = DEFAULT_ALPHA,
    min_ess: float = DEFAULT_MIN_ESS,
    num_prefixes: int = 20,
    block_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    diffusion_name: str | None = None,
    progress_bar: bool = False,
    estimator: Estimator = "exact",
    num_inducing: int | None = None,
) -> xr.Dataset:
    """:func:`ksd_diagnostic` on resolved :class:`~numpyro_dsd.mcmc.inputs.Draws` and a diffusion
    object (the functional core: no model handling, no flow fitting). ``rng_key`` draws the
    bootstrap signs (None: ``jax.random.key(0)``), recorded in the ``rng_key`` attribute;
    ``progress_bar`` shows the KSD tests' bar, ``estimator``/``num_inducing`` choose the
    Nyström projection (:func:`ksd_diagnostic`; the key then also draws the inducing points)."""
    key, record = rng_key_or_default(rng_key)
    num_bootstrap = _check_options(num_bootstrap, flip_prob, kappa, alpha, min_ess, num_prefixes)
    check_estimator(estimator, num_inducing)
    check_num_draws(draws.num_draws, MIN_DRAWS)
    kernel = default_kernel() if kernel is None else kernel
    x, s = draws.x, draws.scores
    d, n, num_chains = x.shape[-1], draws.num_draws, draws.num_chains
    feats = checked_features(diffusion, x.reshape(-1, d), s.reshape(-1, d))  # once per draw
    frozen = kernel.frozen(feats.x)
    settings = diffusion.settings()
    opts = {"block_size": block_size, "devices": devices}
    chains = [
        from_features(take_features(feats, slice(c * n, (c + 1) * n)), frozen, settings)
        for c in range(num_chains)
    ]
    pooled = from_features(feats, frozen, settings)
    ms = prefix_points(n, num_prefixes)
    nys = [None] * (num_chains + 1)
    if estimator == "nystrom":
        key, k_inducing = jax.random.split(key)
        keys = jax.random.split(k_inducing, num_chains + 1)
        nys = [nystrom(sk, k, num_inducing) for sk, k in zip([*chains, pooled], keys, strict=True)]
    curves = [_curve(sk, ny, ms, opts) for sk, ny in zip(chains, nys, strict=False)]
    if test:
        tests = _tests(
            chains, pooled, feats.x, key, (num_bootstrap, flip_prob, kappa), opts, progress_bar, nys
        )
        moments = _moments(feats, num_chains)
    else:
        nan, no_moments = (jnp.nan, jnp.nan, jnp.nan), MomentTest(np.nan, np.nan, "")
        tests = ([nan] * num_chains, nan, (np.nan,) * num_chains)
        moments = ([no_moments] * num_chains, no_moments)
    everything = np.array([pooled.n])  # the pooled KSD: the prefix of all C n draws
    v_pooled = tests[1][0] / pooled.n if test else _curve(pooled, nys[-1], everything, opts)[-1]
    xs = np.asarray(x)
    stats = (
        [stationarity(xs[c : c + 1]) for c in range(num_chains)],
        stationarity(xs),
    )
    judged = _judge(tests, stats, moments, alpha, min_ess) if test else _untested(num_chains)
    attrs = _attrs(kernel, diffusion, diffusion_name, test, num_bootstrap, kappa, flip_prob)
    attrs.update(rng_key=record, alpha=float(alpha), min_ess=float(min_ess))
    attrs["moments_untested"] = moments[1].untested  # heavy tails: left out of the moment test
    attrs["estimator"] = estimator
    if estimator == "nystrom":
        attrs["num_inducing"] = nys[0].num_inducing
        attrs["num_inducing_pooled"] = nys[-1].num_inducing
    ds = _dataset(curves, v_pooled, tests, stats, moments, judged, draws, ms, attrs)
    return _with_flow(ds, getattr(diffusion, "fitted", None))


def _check_options(
    num_bootstrap: object,
    flip_prob: object,
    kappa: object,
    alpha: object,
    min_ess: object,
    num_prefixes: object,
) -> int:
    """Every option checked before any work (errors name the argument); ``num_bootstrap``."""
    positive_int(num_prefixes, "num_prefixes")
    check_level(alpha, min_ess)
    return check_test_options(num_bootstrap, flip_prob, kappa)


def _with_flow(ds: xr.Dataset, fitted: Any) -> xr.Dataset:
    """Keep a fitted flow's arrays with the result (``FittedFlow.to_dataset``): a later
    diagnostic with ``diffusion=ds``, or of the saved file, reuses the flow."""
    if fitted is None:
        return ds
    flow = fitted.to_dataset()
    ds = ds.assign(flow.data_vars)
    ds.attrs.update(flow.attrs)
    return ds


def _moments(feats: Any, num_chains: int) -> tuple[list[MomentTest], MomentTest]:
    """The Stein moment test (:mod:`numpyro_dsd.mcmc.moments`) of every chain (pooled yardstick)
    and of all draws, on the diffusion's points and effective scores (latent ones for a flow)."""
    x = np.asarray(feats.x, dtype=np.float64).reshape(num_chains, -1, feats.x.shape[-1])
    b = np.asarray(feats.b, dtype=np.float64).reshape(x.shape)
    if feats.M is None:
        m = np.ones(x.shape[-1])
    elif feats.M.ndim == 2:
        m = np.diagonal(np.asarray(feats.M, dtype=np.float64))
    else:
        m = np.diagonal(np.asarray(feats.M, dtype=np.float64), axis1=-2, axis2=-1).reshape(x.shape)
    return moment_tests(x, b, m)


def _judge(
    tests: tuple[list[tuple], tuple, tuple[float, ...]],
    stats: tuple[list[Stationarity], Stationarity],
    moments: tuple[list[MomentTest], MomentTest],
    alpha: float,
    min_ess: float,
) -> tuple[list[Verdict], Verdict]:
    """The verdicts (:func:`numpyro_dsd.mcmc.verdict.verdicts`) from the three tests."""
    per_chain, pooled, _ = tests
    chains = [
        Evidence(float(t[1]), st, m)
        for t, st, m in zip(per_chain, stats[0], moments[0], strict=True)
    ]
    pooled_ev = Evidence(float(pooled[1]), stats[1], moments[1])
    return verdicts(chains, pooled_ev, alpha=alpha, min_ess=min_ess)


def _untested(num_chains: int) -> tuple[list[Verdict], Verdict]:
    """``test=False``: no KSD test, so no verdict can be reached."""
    none = Verdict("inconclusive", "no KSD test (test=False)", float("nan"))
    return [none] * num_chains, none


def _curve(sk: SteinKernel, ny: Nystrom | None, ms: np.ndarray, opts: dict[str, Any]) -> Any:
    """:math:`\\hat V_m` at the prefix lengths ``ms``: every prefix in one pass
    (:func:`~numpyro_dsd.mcmc.prefix.prefix_ksd_squared`), or the Nyström estimates."""
    if ny is None:
        return prefix_ksd_squared(sk, **opts)[ms - 1]
    return nystrom_squared(sk, ny, prefix_weights(sk.n, ms, sk.diag.dtype), **opts)


def _tests(
    chains: list[SteinKernel],
    pooled: SteinKernel,
    points: jax.Array,
    key: jax.Array,
    settings: tuple[int, float | str, float],
    opts: dict[str, Any],
    progress_bar: bool = False,
    nys: list[Nystrom | None] | None = None,
) -> tuple[list[tuple], tuple, tuple[float, ...]]:
    """The wild-bootstrap test of every chain and of the pooled draws, with the same signs:
    ((statistic, pvalue, ratio) per chain, the same pooled, flip probabilities). ``settings``:
    (num_bootstrap, flip_prob, kappa); ``nys``: the Nyström projections of the chains and the
    pooled draws (None: exact)."""
    num_bootstrap, flip_prob, kappa = settings
    n = chains[0].n
    nys = [None] * (len(chains) + 1) if nys is None else nys
    series = (
        np.stack(
            [
                memory_series(sk, points[c * n : (c + 1) * n], nystrom=ny, **opts)
                for c, (sk, ny) in enumerate(zip(chains, nys, strict=False))
            ]
        )
        if flip_prob == "auto"
        else np.zeros((len(chains), n))
    )
    signs, probs = chain_signs(key, series, num_bootstrap, flip_prob, kappa)
    signs = signs.reshape(len(chains), n, num_bootstrap)
    kernels = [*chains, pooled]
    bar = tqdm(total=len(kernels), desc="KSD tests", disable=not progress_bar, delay=PROGRESS_DELAY)
    results = []
    with bar:
        for sk, w, ny in zip(kernels, [*signs, signs.reshape(-1, num_bootstrap)], nys, strict=True):
            if ny is None:
                res = wild_bootstrap(sk, w, **opts)
            else:
                res = nystrom_bootstrap(sk, ny, w, devices=opts["devices"])
            results.append(_summary(jax.block_until_ready(res)))
            bar.update()
    return results[:-1], results[-1], probs


def _summary(res: Any) -> tuple[Any, Any, Any]:
    """(statistic, p-value, statistic over the median replicate) of a bootstrap result."""
    return res.statistic, res.pvalue, res.statistic / jnp.median(res.replicates)


def _sqrt(v: Any) -> np.ndarray:
    return np.sqrt(np.maximum(np.asarray(v, dtype=float), 0.0))


def _dataset(
    curves: list[Any],
    v_pooled: Any,
    tests: tuple[list[tuple], tuple, tuple[float, ...]],
    stats: tuple[list[Stationarity], Stationarity],
    moments: tuple[list[MomentTest], MomentTest],
    judged: tuple[list[Verdict], Verdict],
    draws: Draws,
    ms: np.ndarray,
    attrs: dict[str, Any],
) -> xr.Dataset:
    per_chain, pooled, probs = tests
    v = np.array([float(c[-1]) for c in curves])
    trace = np.stack([np.asarray(c, dtype=float) for c in curves])
    p, ratio = (np.array([float(t[k]) for t in per_chain]) for k in (1, 2))
    chain_stats, pooled_stat = stats
    chain_m, pooled_m = moments
    chain_v, pooled_v = judged
    return xr.Dataset(
        {
            "ksd": (CHAIN, _sqrt(v)),
            "pvalue": (CHAIN, p),
            "ksd_ratio": (CHAIN, ratio),
            "verdict": (CHAIN, np.array([c.verdict for c in chain_v], dtype=object)),
            "reason": (CHAIN, np.array([c.reason for c in chain_v], dtype=object)),
            "rhat": (CHAIN, np.array([st.rhat for st in chain_stats])),
            "ess": (CHAIN, np.array([st.ess for st in chain_stats])),
            "pvalue_stationarity": (CHAIN, np.array([st.pvalue for st in chain_stats])),
            "pvalue_moments": (CHAIN, np.array([m.pvalue for m in chain_m])),
            "n": (CHAIN, np.full(draws.num_chains, draws.num_draws)),
            "flip_prob": (CHAIN, np.asarray(probs, dtype=float)),
            "ksd_pooled": ((), float(_sqrt(v_pooled))),
            "pvalue_pooled": ((), float(pooled[1])),
            "ksd_ratio_pooled": ((), float(pooled[2])),
            "verdict_pooled": ((), pooled_v.verdict),
            "reason_pooled": ((), pooled_v.reason),
            "rhat_pooled": ((), pooled_stat.rhat),
            "ess_pooled": ((), pooled_stat.ess),
            "pvalue_stationarity_pooled": ((), pooled_stat.pvalue),
            "pvalue_moments_pooled": ((), pooled_m.pvalue),
            "ksd_trace": ((CHAIN, PREFIX), _sqrt(trace)),
        },
        coords={CHAIN: np.arange(draws.num_chains), PREFIX: ms},
        attrs=attrs,
    )


def _attrs(
    kernel: IMQ | Gaussian,
    diffusion: Diffusion,
    name: str | None,
    test: bool,
    num_bootstrap: int,
    kappa: float | str,
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
        kappa=kappa if isinstance(kappa, str) else float(kappa),
        flip_prob_rule=str(flip_prob),
        package="numpyro_dsd",
    )
    return {k: v if isinstance(v, int | float | str) else str(v) for k, v in settings.items()}
