"""Stein thinning of MCMC output (Riabiz et al. 2022; docs/math.md §2.8): :func:`stein_thin`
takes an ``MCMC``, draws with their model, or ArviZ data, and returns the selected draws with
their chain and draw indices (:class:`~numpyro_dsd.mcmc.thinning.ThinningResult`). The greedy
algorithm on arrays is :mod:`numpyro_dsd.stein.thinning`.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from numpyro_dsd._validation import positive_int
from numpyro_dsd.mcmc.diagnostic import diagnose_draws
from numpyro_dsd.mcmc.inputs import Draws, canonical_diffusion, resolve_diffusion, resolve_draws
from numpyro_dsd.mcmc.stationarity import MIN_DRAWS
from numpyro_dsd.stein.diffusion import Diffusion
from numpyro_dsd.stein.engine import prepare
from numpyro_dsd.stein.kernels import IMQ, Gaussian
from numpyro_dsd.stein.thinning import _greedy, thinned_ksd
from numpyro_dsd.vocabulary import renamed_arguments, rng_key_or_default

__all__ = ["FailedDiagnosticWarning", "ThinningResult", "stein_thin"]


class FailedDiagnosticWarning(UserWarning):
    """The draws given to :func:`stein_thin` fail the KSD diagnostic: thinning reweights the
    draws it has and cannot restore mass the sampler missed, so the thinned set keeps the bias."""


class ThinningResult(NamedTuple):
    """The output of :func:`stein_thin`.

    Attributes
    ----------
    indices : (m,) int
        Selected rows of the chain-flattened draws (``chain * draws + draw``); repeats allowed.
    chain, draw : (m,) int
        The same selection as (chain, draw) pairs.
    samples : dict or None
        Selected constrained draws ``{site: (m, ...)}`` (None when only unconstrained draws
        and scores were given).
    x : (m, d)
        Selected unconstrained draws.
    ksd : scalar
        :math:`\\sqrt{\\hat V}` of the thinned set (uniform weights over the m selections), with
        the kernel resolved on all n draws (latent draws for a flow).
    settings : dict
        Kernel and diffusion settings, so the result explains itself.
    """

    indices: jax.Array
    chain: jax.Array
    draw: jax.Array
    samples: dict[str, jax.Array] | None
    x: jax.Array
    ksd: jax.Array
    settings: dict[str, object]


def _old_argument_order(fn: Callable) -> Callable:
    """Accept ``stein_thin(data, m, model, model_args, model_kwargs)``, the order before
    ``num_points`` became a keyword, for one release (``DeprecationWarning``): a second
    positional argument that is not a model (None or callable) is the old ``m``."""

    @functools.wraps(fn)
    def wrapper(data: Any, *args: Any, **kwargs: Any) -> Any:
        if args and args[0] is not None and not callable(args[0]):
            warnings.warn(
                "stein_thin(data, m, model, ...) is deprecated and will be removed in the next "
                "release; use stein_thin(data, model, model_args, model_kwargs, num_points=m).",
                DeprecationWarning,
                stacklevel=3,
            )
            names = ("num_points", "model", "model_args", "model_kwargs")
            if len(args) > len(names):
                raise TypeError(f"stein_thin takes at most {len(names) + 1} positional arguments.")
            for name, value in zip(names, args, strict=False):
                if name in kwargs:
                    raise TypeError(f"stein_thin got multiple values for {name!r}.")
                kwargs[name] = value
            args = ()
        return fn(data, *args, **kwargs)

    return wrapper


@renamed_arguments(m="num_points")
@_old_argument_order
def stein_thin(
    data: Any,
    model: Callable | None = None,
    model_args: tuple = (),
    model_kwargs: Mapping[str, Any] | None = None,
    *,
    num_points: int,
    kernel: IMQ | Gaussian | None = None,
    diffusion: str | Diffusion = "identity",
    rng_key: jax.Array | None = None,
    flow_kwargs: Mapping[str, Any] | None = None,
    check: bool = True,
) -> ThinningResult:
    """Stein-thin MCMC output to m = ``num_points`` draws (Riabiz et al. 2022;
    docs/math.md §2.8).

    Arguments in the order of :func:`~numpyro_dsd.ksd_diagnostic`:
    ``stein_thin(data, model, model_args, model_kwargs, num_points=m)``. The old order
    ``stein_thin(data, m, model, ...)`` and ``m=`` still work for one release and warn.

    The chains are flattened (chain-major, ``index = chain * draws + draw``) and
    :func:`~numpyro_dsd.thin_indices` picks

    .. math::
        \\pi_t = \\arg\\min_i\\Big[\\tfrac12 k^0(x_i, x_i) + \\sum_{j<t} k^0(x_{\\pi_j}, x_i)\\Big]

    in NumPyro's unconstrained space, at :math:`O(nmd)` cost and :math:`O(n)` memory.

    Parameters
    ----------
    data : MCMC, dict or InferenceData/DataTree
        An ``MCMC`` object after ``run``; a dict of constrained draws
        ``{site: (chains, draws, ...)}`` with ``model``; or ArviZ data with ``model``
        (see :func:`numpyro_dsd.mcmc.inputs.resolve_draws`).
    model : callable, optional
        The NumPyro model, when ``data`` does not carry it.
    model_args, model_kwargs : tuple, dict, optional
        Arguments the model was sampled with.
    num_points : int
        Number of draws to keep, m >= 1 (repeats allowed).
    kernel : IMQ or Gaussian, optional
        Default :func:`~numpyro_dsd.stein.kernels.default_kernel`, resolved once on all n
        (latent, for a flow) draws.
    diffusion : {"identity", "covariance", "flow"} or a diffusion object
        Resolved by :func:`numpyro_dsd.mcmc.inputs.resolve_diffusion`; ``"flow"`` fits a flow
        (using ``rng_key``) and thins in its latent space. ``"precond"`` is the deprecated name
        of ``"covariance"``.
    rng_key : jax.random key, optional
        For diffusions that are fitted (``"flow"``); None means ``jax.random.key(0)``
        (:mod:`numpyro_dsd.vocabulary`'s key rule), recorded in ``settings["rng_key"]``.
    flow_kwargs : dict, optional
        Passed to the flow fitting with ``diffusion="flow"``.
    check : bool
        First run :func:`~numpyro_dsd.mcmc.diagnostic.diagnose_draws` on the draws (same kernel
        and diffusion, 200 bootstrap replicates, :math:`O(n^2)`) and warn with
        :class:`FailedDiagnosticWarning` when its pooled verdict is "fail": Stein thinning picks
        a subset that matches the target *as well as these draws allow*; it reweights, it
        cannot put back mass the sampler never visited, and on biased draws it can make the
        bias worse (docs/diagnostic.md). ``False`` skips the check (very long runs).

    Returns
    -------
    ThinningResult
        ``indices``, ``chain``, ``draw``, ``samples``, ``x``, ``ksd`` and ``settings`` (kernel,
        bandwidth, diffusion, ``num_points``, ``num_draws``, ``rng_key``, and ``verdict`` /
        ``reason`` of the check, or ``"not checked"``).

    Examples
    --------
    >>> import numpyro, numpyro.distributions as dist
    >>> def model():
    ...     numpyro.sample("theta", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    >>> draws = {"theta": jax.random.normal(jax.random.key(0), (2, 100, 2))}  # 2 chains
    >>> res = stein_thin(draws, model, num_points=10)
    >>> res.samples["theta"].shape, res.chain.shape
    ((10, 2), (10,))

    With an ``MCMC`` object (NUTS's recorded gradients are reused):

    >>> mcmc = MCMC(NUTS(model), num_warmup=500, num_samples=2000)  # doctest: +SKIP
    >>> mcmc.run(jax.random.key(0), extra_fields=("z_grad",))  # doctest: +SKIP
    >>> res = stein_thin(mcmc, num_points=50)  # doctest: +SKIP
    """
    num_points = positive_int(num_points, "num_points")
    diffusion = canonical_diffusion(diffusion, stacklevel=6)
    key, record = rng_key_or_default(rng_key)
    short = ", or pass check=False to thin without the diagnostic's check"
    minimum, hint = (MIN_DRAWS, short) if check else (2, "")
    draws = resolve_draws(data, model, model_args, model_kwargs, min_draws=minimum, hint=hint)
    chains, n_draws, d = draws.x.shape
    diff = resolve_diffusion(diffusion, draws, rng_key=key, flow_kwargs=flow_kwargs)
    x = jnp.reshape(draws.x, (chains * n_draws, d))
    s = jnp.reshape(draws.scores, (chains * n_draws, d))
    verdict = _check(draws, diff, kernel, key) if check else ("not checked", "check=False")
    sk = prepare(x, s, kernel=kernel, diffusion=diff)
    idx, gains = _greedy(sk, num_points)
    samples = None
    if draws.samples is not None:
        samples = {
            k: jnp.reshape(v, (chains * n_draws, *jnp.shape(v)[2:]))[idx]
            for k, v in draws.samples.items()
        }
    return ThinningResult(
        indices=idx,
        chain=idx // n_draws,
        draw=idx % n_draws,
        samples=samples,
        x=x[idx],
        ksd=thinned_ksd(gains),
        settings={
            **sk.settings,
            "num_points": num_points,
            "num_draws": chains * n_draws,
            "rng_key": record,
            "verdict": verdict[0],
            "reason": verdict[1],
        },
    )


def _check(draws: Draws, diffusion: Diffusion, kernel: IMQ | Gaussian | None, key: jax.Array):
    """(verdict, reason) of the pooled draws; warns when it is "fail"."""
    ds = diagnose_draws(
        draws, diffusion, kernel=kernel, rng_key=key, num_bootstrap=200, num_prefixes=2
    )
    verdict, reason = str(ds.verdict_pooled.values), str(ds.reason_pooled.values)
    if verdict == "fail":
        warnings.warn(
            f"the draws fail the KSD diagnostic ({reason}). Stein thinning reweights the draws "
            "it is given and cannot restore mass the sampler missed: the thinned set keeps the "
            "bias. Fix the sampler first (reparametrise, longer warm-up), or pass check=False.",
            FailedDiagnosticWarning,
            stacklevel=5,
        )
    return verdict, reason
