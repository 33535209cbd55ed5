"""Wild-bootstrap goodness-of-fit test of :math:`H_0: q = p` with the KSD (docs/math.md §2.6).

The statistic is the degenerate V-statistic :math:`n\\hat V = n^{-1}\\sum_{i,j} k^0(x_i, x_j)`;
its replicates are :math:`B_m = n^{-1} W^{(m)\\top} K^0 W^{(m)}` for random sign vectors
:math:`W^{(m)}`, and the p-value is :math:`(1 + \\#\\{m: B_m \\ge n\\hat V\\}) / (1 + N_{boot})`
with :math:`N_{boot}` = ``num_bootstrap`` replicates.

For independent draws the signs are i.i.d. Rademacher (Liu, Lee & Jordan 2016). MCMC output is
autocorrelated, and i.i.d. signs then reject far too often, so the signs follow the Markov
*sign process* of Chwialkowski, Sejdinovic & Gretton (2014): :math:`W_1 = \\pm 1`, and
:math:`W_t = -W_{t-1}` with probability :math:`a`, else :math:`W_t = W_{t-1}`. Its
autocorrelation is :math:`(1 - 2a)^{|s-t|}`. The flip probability is chosen from the chain's
integrated autocorrelation time :math:`\\tau = n / \\mathrm{ESS}`, the largest over the Stein
row means :math:`h_i = n^{-1}\\sum_j k^0(x_i, x_j)` (the series whose mean is the statistic) and
the coordinates of the points (whose memory the kernel's other components inherit: on
random-walk Metropolis chains the row means alone understate it, docs/benchmarks.md); the ESS is
rank-normalised, split and taken within the halves, so a trend does not inflate it
(:func:`memory_series`, :func:`flip_probability`):

.. math:: a = \\min\\Big(\\tfrac12,\\ \\frac{1}{2\\kappa\\tau}\\Big),

so a chain's signs stay correlated over about :math:`\\kappa\\tau` draws (their correlation
is :math:`(1 - 2a)^{|s - t|} \\approx e^{-|s - t|/(\\kappa\\tau)}`). The memory factor
:math:`\\kappa` trades the bias of the replicates' variance (the sign process's correlation
:math:`e^{-s/(\\kappa\\tau)}` falls off before the chain's, which makes the test too liberal on
long chains) against their noise (few sign runs, which makes it conservative on short ones). By
default (``kappa="auto"``, :func:`memory_factor`) it grows with the chain's length like the
bandwidth of a long-run variance estimate (Andrews 1991, with the AR(1) plug-in):

.. math:: \\kappa = \\max\\Big(1,\\ \\frac{(2 n \\alpha)^{1/3}}{\\tau}\\Big),\\qquad
    \\alpha = \\Big(\\frac{\\tau^2 - 1}{2\\tau}\\Big)^2,

about :math:`(n / 2\\tau)^{1/3}` for slowly mixing chains: 3 at :math:`n = 1000,\\ \\tau = 19`,
6 at :math:`n = 10^4`; i.i.d. draws (:math:`\\tau = 1`) get Rademacher signs. A number
``kappa`` fixes it instead. The constant is set by the calibration study in
``benchmarks/bootstrap_calibration.py`` (docs/benchmarks.md, "Wild-bootstrap calibration").

All replicates come from one blocked pass :math:`K^0 [\\mathbf 1, W^{(1)}, \\dots]`
(:func:`numpyro_dsd.stein.tiling.pair_matvec`): :math:`O(n^2 (d + N_{boot}))` time and
:math:`O(n N_{boot})` memory, never the :math:`n \\times n` matrix. On slowly mixing chains the
signs change rarely, and the replicates come from the sign changes alone
(:func:`numpyro_dsd.stein.tiling.pair_quadratic_jumps`, docs/math.md §2.6): the cost of one pass
over the kernel plus the number of pairs of changes
(:func:`~numpyro_dsd.mcmc.bootstrap.wild_bootstrap`'s ``method``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from numpyro_dsd._validation import positive_int, real_number
from numpyro_dsd.mcmc.stationarity import MIN_DRAWS, within_ess
from numpyro_dsd.stein.diffusion import Diffusion
from numpyro_dsd.stein.engine import SteinKernel, local_devices, prepare, tile_size
from numpyro_dsd.stein.kernels import IMQ, Gaussian
from numpyro_dsd.stein.ksd import Estimator, check_estimator
from numpyro_dsd.stein.nystrom import (
    Nystrom,
    inducing_matvec,
    nystrom,
    nystrom_row_means,
    projected_quadratic,
)
from numpyro_dsd.stein.tiling import pair_matvec, pair_quadratic_jumps, sign_jumps
from numpyro_dsd.vocabulary import renamed_arguments, rng_key_or_default

__all__ = [
    "DEFAULT_KAPPA",
    "BootstrapResult",
    "check_test_options",
    "ksd_test",
    "flip_probability",
    "memory_factor",
    "sign_process",
    "memory_series",
    "nystrom_bootstrap",
    "stein_row_means",
    "wild_bootstrap",
]

#: Sign-process memory factor :math:`\kappa`: ``"auto"`` is :func:`memory_factor` (see the
#: module docstring).
DEFAULT_KAPPA = "auto"

#: Costs of :func:`wild_bootstrap`'s jump form relative to one multiply-add of the dense form,
#: per pair of points (a strip of the kernel and its two-way suffix sums) and per pair of jumps,
#: measured on 2 CPU cores (benchmarks/diagnostic_speed.py, docs/benchmarks.md).
JUMP_COST_PER_POINT_PAIR = 500.0
JUMP_COST_PER_JUMP_PAIR = 15000.0
#: Passes the replicates are split into when :func:`wild_bootstrap` shows a progress bar.
PROGRESS_CHUNKS = 4
#: The jump form holds a strip of the kernel, (block, n), and its suffix sums: the block shrinks
#: so that a strip has at most this many entries (256 MB in float32).
JUMP_STRIP_ENTRIES = 2**26


class BootstrapResult(NamedTuple):
    """Outcome of a wild-bootstrap test.

    Attributes
    ----------
    statistic : scalar
        :math:`n \\hat V`.
    replicates : (num_bootstrap,)
        :math:`B_m`.
    pvalue : scalar
        :math:`(1 + \\#\\{B_m \\ge n\\hat V\\}) / (1 + N_{boot})`.
    flip_prob : tuple of float
        The sign-process flip probability of each chain (:func:`ksd_test`).
    rng_key : str or None
        Which key drew the signs (:func:`ksd_test`; ``numpyro_dsd.vocabulary``'s key rule).
    """

    statistic: jax.Array
    replicates: jax.Array
    pvalue: jax.Array
    flip_prob: tuple[float, ...] = ()
    rng_key: str | None = None


def memory_factor(tau: float, num_draws: int) -> float:
    """The automatic memory factor :math:`\\kappa = \\max(1, (2 n \\alpha)^{1/3} / \\tau)`,
    :math:`\\alpha = ((\\tau^2 - 1) / 2\\tau)^2`, of a chain of ``num_draws`` draws with
    integrated autocorrelation time ``tau`` (module docstring): the sign process's correlation
    length :math:`\\kappa\\tau` is :math:`2^{1/3}` times Andrews' (1991) MSE-optimal bandwidth
    :math:`(n\\alpha)^{1/3}` for the long-run variance of an AR(1) series with that
    :math:`\\tau` (:math:`\\rho = (\\tau - 1)/(\\tau + 1)`, :math:`\\alpha = 4\\rho^2 /
    (1 - \\rho^2)^2`) under the sign process's exponential kernel :math:`e^{-|s|/\\kappa\\tau}`:
    longer, since a test's size needs less bias than the variance's mean squared error.

    Examples
    --------
    >>> round(memory_factor(19.0, 1000), 2), round(memory_factor(19.0, 10_000), 2)
    (2.97, 6.4)
    >>> memory_factor(1.0, 10_000)  # independent draws: Rademacher signs
    1.0
    """
    tau = max(1.0, real_number(tau, "tau"))
    n = positive_int(num_draws, "num_draws")
    alpha = ((tau * tau - 1.0) / (2.0 * tau)) ** 2
    return max(1.0, (2.0 * n * alpha) ** (1.0 / 3.0) / tau)


def flip_probability(series: np.ndarray, kappa: float | str = DEFAULT_KAPPA) -> float:
    """Sign-process flip probability :math:`a = \\min(1/2, 1/(2\\kappa\\tau))` of one chain.

    Parameters
    ----------
    series : (n,) or (n, k)
        The chain's series the statistic is built from, in draw order: the Stein row means
        :math:`h_i = n^{-1}\\sum_j k^0(x_i, x_j)` and the points (:func:`memory_series`).
    kappa : float or "auto"
        Memory factor :math:`\\kappa \\ge 1`; larger is more conservative. ``"auto"``:
        :func:`~numpyro_dsd.mcmc.bootstrap.memory_factor` of the chain's :math:`\\tau` and length.

    Returns
    -------
    float, with :math:`\\tau = n / \\min \\mathrm{ESS}` over the k coordinates, at least 1. The
    ESS is rank-normalised, split and taken within the halves
    (:func:`numpyro_dsd.mcmc.stationarity.within_ess`): heavy tails, a trend or a kept burn-in
    do not inflate :math:`\\tau` towards n, which would make every sign vector constant and
    switch the test off (the stationarity test of the verdict deals with those).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a = flip_probability(rng.normal(size=(2000, 2)), kappa=1.0)  # independent: tau near 1
    >>> 0.2 < a <= 0.5
    True
    """
    _check_kappa(kappa)
    series = np.asarray(series, dtype=np.float64)
    series = series.reshape(series.shape[0], -1)
    n = series.shape[0]
    if n < MIN_DRAWS:
        raise ValueError(
            f"the autocorrelation time needs at least {MIN_DRAWS} draws per chain; got {n}."
        )
    ess = within_ess(series[None])
    ess = ess[np.isfinite(ess) & (ess > 0)]  # a constant coordinate has no ESS
    tau = max(1.0, n / float(np.min(ess))) if ess.size else 1.0
    factor = memory_factor(tau, n) if kappa == "auto" else float(kappa)
    return float(min(0.5, 1.0 / (2.0 * factor * tau)))


def stein_row_means(
    sk: SteinKernel, *, block_size: int | None = None, devices: Sequence[jax.Device] | None = None
) -> jax.Array:
    """:math:`h_i = n^{-1}\\sum_j k^0(x_i, x_j)`, (n,), in one blocked pass: the series whose
    memory the sign process reproduces (the V-statistic is their mean).

    Examples
    --------
    >>> from numpyro_dsd.stein.engine import prepare
    >>> x = jax.random.normal(jax.random.key(0), (50, 2))
    >>> sk = prepare(x, -x)
    >>> bool(jnp.allclose(stein_row_means(sk), sk.matrix().mean(axis=1), atol=1e-5))
    True
    """
    ones = jnp.ones((sk.n, 1), sk.diag.dtype)
    block, devs = tile_size(sk, block_size), local_devices(devices)
    return (
        pair_matvec(sk.tile_fn, sk.feats, sk.consts, sk.diag, ones, block=block, devices=devs)[:, 0]
        / sk.n
    )


def memory_series(
    sk: SteinKernel,
    points: jax.Array,
    *,
    block_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    nystrom: Nystrom | None = None,
) -> np.ndarray:
    """The series whose memory the sign process reproduces, (n, 1 + d): the Stein row means
    :func:`stein_row_means` beside the points (n, d), the draws or a one-to-one image of them
    (the diagnostic passes the points the kernel is evaluated on: latent points for a flow);
    :func:`flip_probability` takes :math:`\\tau` from the slowest of these series. With a
    ``nystrom`` projection the row means are the projected ones
    (:func:`~numpyro_dsd.stein.nystrom.nystrom_row_means`, :math:`O(nm)`).

    Examples
    --------
    >>> from numpyro_dsd.stein.engine import prepare
    >>> x = jax.random.normal(jax.random.key(0), (50, 2))
    >>> memory_series(prepare(x, -x), x).shape
    (50, 3)
    """
    if nystrom is None:
        h = np.asarray(stein_row_means(sk, block_size=block_size, devices=devices))
    else:
        h = np.asarray(nystrom_row_means(sk, nystrom, devices=devices))
    return np.concatenate([h[:, None], np.asarray(points).reshape(h.shape[0], -1)], axis=1)


@renamed_arguments(key="rng_key", n="num_draws", n_boot="num_bootstrap")
def sign_process(
    rng_key: jax.Array, num_draws: int, num_bootstrap: int, flip_prob: float
) -> jax.Array:
    """``num_bootstrap`` independent sign processes of length ``num_draws``, as the columns of a
    (num_draws, num_bootstrap) array.

    :math:`W_1 = \\pm 1` uniformly; :math:`W_t = -W_{t-1}` with probability ``flip_prob``.
    ``flip_prob = 0.5`` gives i.i.d. Rademacher signs.

    Examples
    --------
    >>> w = sign_process(jax.random.key(0), 5, 3, 0.5)
    >>> w.shape, bool(jnp.all(jnp.abs(w) == 1))
    ((5, 3), True)
    """
    num_draws = positive_int(num_draws, "num_draws")
    num_bootstrap = positive_int(num_bootstrap, "num_bootstrap")
    if not 0.0 < real_number(flip_prob, "flip_prob") <= 0.5:
        raise ValueError(f"flip_prob must lie in (0, 0.5]; got {flip_prob}.")
    k0, k1 = jax.random.split(rng_key)
    first = jax.random.rademacher(k0, (1, num_bootstrap), dtype=jnp.int8)
    flips = jnp.where(jax.random.bernoulli(k1, flip_prob, (num_draws - 1, num_bootstrap)), -1, 1)
    return jnp.cumprod(jnp.concatenate([first, flips.astype(jnp.int8)]), axis=0)


def wild_bootstrap(
    sk: SteinKernel,
    signs: jax.Array,
    *,
    block_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    method: str = "auto",
    progress_bar: bool = False,
) -> BootstrapResult:
    """Wild-bootstrap p-value of :math:`n\\hat V` for a prepared Stein kernel.

    Parameters
    ----------
    sk : SteinKernel
        From :func:`numpyro_dsd.stein.prepare` on the n points (freeze the kernel first, so the
        bandwidth is not fitted to the data being tested; docs/math.md §8).
    signs : (n, num_bootstrap)
        Sign vectors, e.g. :func:`sign_process` per chain, stacked along n for pooled chains
        (independent chains get independent processes).
    block_size, devices
        As for :func:`numpyro_dsd.ksd`.
    method : {"auto", "dense", "jumps"}
        How the replicates are computed; all give the same values up to rounding. ``"dense"``:
        :math:`K^0 [\\mathbf 1, W]` in one blocked pass
        (:func:`~numpyro_dsd.stein.tiling.pair_matvec`), :math:`O(n^2 N_{boot})`. ``"jumps"``:
        from the sign changes alone (:func:`~numpyro_dsd.stein.tiling.pair_quadratic_jumps`),
        :math:`O(n^2 + \\sum_m J_m^2)`
        for :math:`J_m` changes in :math:`W^{(m)}`: several times faster on slowly mixing
        chains, whose signs rarely flip. ``"auto"`` picks the cheaper by the measured costs
        ``JUMP_COST_PER_POINT_PAIR`` and ``JUMP_COST_PER_JUMP_PAIR``.
    progress_bar : bool
        A tqdm bar over the replicates (default off: it costs time). The dense form then
        computes them in ``PROGRESS_CHUNKS`` passes, each evaluating the kernel again
        (about 1.2 times the time at n = 4000, d = 10, 1000 replicates; docs/benchmarks.md,
        "Latency"); the jump form, whose cost is mostly one evaluation of the kernel, stays one
        pass and its bar moves once. Off, the computation is the single pass.

    Returns
    -------
    BootstrapResult

    Examples
    --------
    >>> from numpyro_dsd.stein.engine import prepare
    >>> x = jax.random.normal(jax.random.key(0), (500, 2))
    >>> sk = prepare(x, -x)
    >>> res = wild_bootstrap(sk, sign_process(jax.random.key(1), 500, 200, 0.5))
    >>> bool(res.pvalue > 0.01)
    True
    """
    n = sk.n
    if signs.ndim != 2 or signs.shape[0] != n:
        raise ValueError(f"signs must have shape ({n}, num_bootstrap); got {tuple(signs.shape)}.")
    block, devs = tile_size(sk, block_size), local_devices(devices)
    args = (sk.tile_fn, sk.feats, sk.consts, sk.diag)
    w = np.concatenate([np.ones((n, 1), np.int8), np.asarray(signs, dtype=np.int8)], axis=1)
    if method not in ("auto", "dense", "jumps"):
        raise ValueError(f"method must be 'auto', 'dense' or 'jumps'; got {method!r}.")
    if method == "jumps" and _jump_pairs(w) > w.size:
        raise ValueError(
            f"method='jumps' needs {_jump_pairs(w):.3g} pairs of sign changes, more than the "
            f"{w.size} entries of the dense product: the signs flip too often for it; use "
            "method='auto' or 'dense'."
        )
    jumps = method == "jumps" or (method == "auto" and _jumps_cheaper(w))
    if jumps:
        block = max(8, min(block, JUMP_STRIP_ENTRIES // n // 8 * 8))  # a strip is (block, n)
    chunks = PROGRESS_CHUNKS if progress_bar and not jumps else 1  # a jump pass redoes K^0
    columns = np.array_split(np.arange(w.shape[1]), chunks)
    parts = []
    with tqdm(total=w.shape[1] - 1, disable=not progress_bar, desc="bootstrap") as bar:
        for cols in columns:
            parts.append(_quadratic_forms(args, w[:, cols], jumps, block, devs) / n)
            bar.update(len(cols) - (cols[0] == 0))
    quad = jnp.concatenate(parts)
    stat, reps = quad[0], quad[1:]
    pvalue = (1.0 + jnp.sum(reps >= stat)) / (1.0 + reps.shape[0])
    return BootstrapResult(stat, reps, pvalue)


def _quadratic_forms(
    args: tuple, w: np.ndarray, jumps: bool, block: int, devices: Sequence[jax.Device]
) -> jax.Array:
    """:math:`W_m^\\top K^0 W_m` for the columns of ``w`` (n, k): from the sign changes
    (``jumps``) or by the dense product."""
    if jumps:
        return pair_quadratic_jumps(*args, sign_jumps(w, block), block=block, devices=devices)
    w = jnp.asarray(w, args[3].dtype)
    return jnp.sum(w * pair_matvec(*args, w, block=block, devices=devices), axis=0)


def nystrom_bootstrap(
    sk: SteinKernel,
    ny: Nystrom,
    signs: jax.Array,
    *,
    devices: Sequence[jax.Device] | None = None,
) -> BootstrapResult:
    """The Nyström wild bootstrap (Kalinke, Szabó & Sriperumbudur 2025): statistic and
    replicates with the Stein kernel projected on the inducing points of ``ny``,

    .. math::
        B_m = n^{-1} (K_{mn} W^{(m)})^\\top K_{mm}^+ (K_{mn} W^{(m)}) + \\bar g,

    the statistic the same with :math:`W = \\mathbf 1`, and :math:`\\bar g` the mean gap of the
    diagonal (:class:`~numpyro_dsd.stein.nystrom.Nystrom`; it shifts all alike, so the
    p-value is that of the projection, and the statistic estimates :math:`n\\hat V`). One pass
    :math:`K_{mn}[\\mathbf 1, W]`: :math:`O(n m N_{boot})`, never an (n, n) or (n, m) array.

    Examples
    --------
    >>> from numpyro_dsd.stein.engine import prepare
    >>> from numpyro_dsd.stein.nystrom import nystrom
    >>> x = jax.random.normal(jax.random.key(0), (2000, 2))
    >>> sk = prepare(x, -x)
    >>> ny = nystrom(sk, jax.random.key(1))
    >>> res = nystrom_bootstrap(sk, ny, sign_process(jax.random.key(2), 2000, 200, 0.5))
    >>> bool(res.pvalue > 0.01)
    True
    """
    n = sk.n
    if signs.ndim != 2 or signs.shape[0] != n:
        raise ValueError(f"signs must have shape ({n}, num_bootstrap); got {tuple(signs.shape)}.")
    w = jnp.concatenate([jnp.ones((n, 1), jnp.int8), jnp.asarray(signs, jnp.int8)], axis=1)
    quad = projected_quadratic(ny, inducing_matvec(sk, ny.indices, w, devices=devices)) / n
    quad = quad + jnp.mean(ny.gap)
    stat, reps = quad[0], quad[1:]
    pvalue = (1.0 + jnp.sum(reps >= stat)) / (1.0 + reps.shape[0])
    return BootstrapResult(stat, reps, pvalue)


def _jump_pairs(w: np.ndarray) -> float:
    """:math:`\\sum_c m_c^2` for :math:`m_c` jumps in column c of w (the first row counts)."""
    per_column = np.count_nonzero(w[1:] != w[:-1], axis=0) + 1
    return float(np.sum(per_column.astype(np.float64) ** 2))


def _jumps_cheaper(w: np.ndarray) -> bool:
    """Whether the jump form of :func:`wild_bootstrap` costs less than the dense product, by the
    measured costs :data:`JUMP_COST_PER_POINT_PAIR` and :data:`JUMP_COST_PER_JUMP_PAIR`."""
    n, k = w.shape
    jump_cost = JUMP_COST_PER_POINT_PAIR * n**2 + JUMP_COST_PER_JUMP_PAIR * _jump_pairs(w)
    return jump_cost < float(n) ** 2 * k


def chain_signs(
    rng_key: jax.Array,
    series: np.ndarray,
    num_bootstrap: int,
    flip_prob: float | str,
    kappa: float | str,
) -> tuple[jax.Array, tuple[float, ...]]:
    """Independent sign processes for chains whose series (C, n) or (C, n, k) are given, stacked
    to (C n, num_bootstrap), and the flip probability of each chain (``"auto"``:
    :func:`flip_probability` of the chain's series); one sub-key of ``rng_key`` per chain."""
    _check_flip_prob(flip_prob)
    series = np.asarray(series)
    if flip_prob == "auto":
        probs = tuple(flip_probability(chain, kappa) for chain in series)
    else:
        probs = (float(flip_prob),) * series.shape[0]
    keys = jax.random.split(rng_key, series.shape[0])
    signs = [
        sign_process(k, series.shape[1], num_bootstrap, a) for k, a in zip(keys, probs, strict=True)
    ]
    return jnp.concatenate(signs, axis=0), probs


def check_test_options(num_bootstrap: object, flip_prob: object, kappa: object) -> int:
    """Check the wild-bootstrap test's options before any work; return ``num_bootstrap``.

    Raises
    ------
    TypeError
        ``num_bootstrap`` not an integer, ``flip_prob`` or ``kappa`` not a number.
    ValueError
        ``num_bootstrap < 1``, ``flip_prob`` neither ``"auto"`` nor in (0, 0.5], ``kappa``
        neither ``"auto"`` nor >= 1.

    Examples
    --------
    >>> check_test_options(200, "auto", DEFAULT_KAPPA)
    200
    """
    _check_flip_prob(flip_prob)
    _check_kappa(kappa)
    return positive_int(num_bootstrap, "num_bootstrap")


def _check_flip_prob(flip_prob: object) -> None:
    _check_auto_or(flip_prob, "flip_prob", lambda a: 0.0 < a <= 0.5, "a number in (0, 0.5]")


def _check_kappa(kappa: object) -> None:
    _check_auto_or(kappa, "kappa", lambda k: k >= 1.0, "a number >= 1")


def _check_auto_or(value: object, name: str, valid: Callable[[float], bool], what: str) -> None:
    """``value`` is ``"auto"`` or a number that ``valid`` accepts, else a ValueError naming it."""
    if isinstance(value, str) and value == "auto":
        return
    if isinstance(value, str) or not valid(real_number(value, name)):
        raise ValueError(f"{name} must be 'auto' or {what}; got {value!r}.")


@renamed_arguments(n_boot="num_bootstrap")
def ksd_test(
    x: np.ndarray,
    scores: np.ndarray,
    *,
    kernel: IMQ | Gaussian | None = None,
    diffusion: Diffusion | None = None,
    num_bootstrap: int = 1000,
    flip_prob: float | str = "auto",
    kappa: float | str = DEFAULT_KAPPA,
    rng_key: jax.Array | None = None,
    progress_bar: bool = False,
    estimator: Estimator = "exact",
    num_inducing: int | None = None,
) -> BootstrapResult:
    """Wild-bootstrap KSD test of draws against the target whose scores are given.

    Parameters
    ----------
    x, scores : (n, d) or (chains, n, d)
        Draws in sampling order and :math:`\\nabla\\log p` at them. Several chains are pooled
        (one statistic over all draws), each with its own independent sign process.
    kernel, diffusion
        As for :func:`numpyro_dsd.ksd` (default kernel:
        :func:`~numpyro_dsd.stein.kernels.default_kernel`). A data-dependent bandwidth
        (``"med"`` ...) is resolved on the draws being tested; pass a frozen kernel to avoid that.
    num_bootstrap : int
        Number of bootstrap replicates (``n_boot`` is its deprecated name).
    flip_prob : float or "auto"
        Sign-process flip probability (0.5: i.i.d. Rademacher, for independent draws);
        ``"auto"`` sets it per chain from the autocorrelation time.
    kappa : float or "auto"
        Memory factor of the automatic choice (default ``"auto"``:
        :func:`~numpyro_dsd.mcmc.bootstrap.memory_factor`, growing with the chain's length).
    rng_key : jax.Array, optional
        For the signs (with ``estimator="nystrom"`` split into signs and inducing points);
        None means ``jax.random.key(0)`` (:mod:`numpyro_dsd.vocabulary`'s key rule), recorded
        in the result's ``rng_key``.
    progress_bar : bool
        A bar over the bootstrap replicates (:func:`~numpyro_dsd.mcmc.bootstrap.wild_bootstrap`;
        the Nyström bootstrap is one pass and shows none).
    estimator : {"exact", "nystrom"}
        ``"nystrom"``: the Nyström bootstrap
        (:func:`~numpyro_dsd.mcmc.bootstrap.nystrom_bootstrap`), :math:`O(n m N_{boot})` instead
        of :math:`O(n^2 N_{boot})`, the sign process's memory read from the projected row means.
        Its size on i.i.d. and AR(1) draws: docs/scale.md.
    num_inducing : int, optional
        m for ``estimator="nystrom"`` (default
        :func:`~numpyro_dsd.stein.nystrom.default_num_inducing`).

    Returns
    -------
    BootstrapResult, with the flip probability of each chain and the key record.

    Examples
    --------
    >>> x = jax.random.normal(jax.random.key(0), (2, 400, 2))  # two chains of N(0, I)
    >>> bool(ksd_test(x, -x, num_bootstrap=200).pvalue > 0.01)
    True
    >>> bool(ksd_test(1.3 * x, -1.3 * x, num_bootstrap=200).pvalue < 0.01)  # scale 30% too wide
    True
    >>> bool(ksd_test(1.3 * x, -1.3 * x, num_bootstrap=200, estimator="nystrom").pvalue < 0.01)
    True
    """
    num_bootstrap = check_test_options(num_bootstrap, flip_prob, kappa)
    check_estimator(estimator, num_inducing)
    key, record = rng_key_or_default(rng_key)
    x, scores = np.asarray(x), np.asarray(scores)
    if x.ndim == 2:
        x, scores = x[None], scores[None]
    if x.ndim != 3 or x.shape != scores.shape:
        raise ValueError(
            f"x and scores must both have shape (n, d) or (chains, n, d); got {x.shape} and "
            f"{scores.shape}."
        )
    flat = (x.reshape(-1, x.shape[-1]), scores.reshape(-1, x.shape[-1]))
    sk = prepare(*flat, kernel=kernel, diffusion=diffusion)
    ny = None
    if estimator == "nystrom":
        key, k_inducing = jax.random.split(key)
        ny = nystrom(sk, k_inducing, num_inducing)
        record = f"{record}; split into (signs, inducing points)"
    if flip_prob == "auto":
        series = memory_series(sk, flat[0], nystrom=ny).reshape(*x.shape[:2], -1)
    else:
        series = x
    signs, probs = chain_signs(key, series, num_bootstrap, flip_prob, kappa)
    if ny is None:
        result = wild_bootstrap(sk, signs, progress_bar=progress_bar)
    else:
        result = nystrom_bootstrap(sk, ny, signs)
    return result._replace(flip_prob=probs, rng_key=record)
