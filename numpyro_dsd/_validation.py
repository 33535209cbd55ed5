"""Input checks shared by the public functions: clear ``ValueError``s, nothing silently fixed.

Value checks (finiteness, weights summing to one, overflow) need concrete arrays; under ``jit``
the inputs are tracers and only the shape and dtype checks run.

Under multi-controller JAX (``jax.distributed``, several processes) an input may be a global
``jax.Array`` whose rows are split over the processes; the checks read it through
:func:`host_array`, which gathers it (a collective: every process calls it, as every process
calls the public function), so every process checks, and raises on, the whole array alike.
"""

from __future__ import annotations

import numbers
import operator

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from numpyro_dsd.vocabulary import describe

__all__ = [
    "as_points",
    "cast_finite",
    "check_finite",
    "check_overflow",
    "check_pair",
    "check_weights",
    "float_dtype",
    "host_array",
    "overflow_fix",
    "positive_int",
    "real_dtype",
    "real_number",
    "spans_processes",
    "square_matrix",
]

_FLOAT64_SWITCH = "jax.config.update('jax_enable_x64', True)"


def is_concrete(a: object) -> bool:
    return not isinstance(a, jax.core.Tracer)


def spans_processes(a: object) -> bool:
    """Whether ``a`` is a ``jax.Array`` split over the devices of several processes
    (multi-controller JAX), so that no process holds all of it: ``np.asarray`` cannot read it,
    :func:`host_array` can. Always ``False`` in one process, and for an array replicated on
    every device.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> spans_processes(jnp.ones(3)), spans_processes(np.ones(3))
    (False, False)
    """
    return (
        isinstance(a, jax.Array)
        and is_concrete(a)
        and not a.is_fully_addressable
        and not a.is_fully_replicated
    )


def host_array(a: ArrayLike) -> np.ndarray:
    """All of ``a`` as a NumPy array on this process.

    ``np.asarray(a)``, except for a global ``jax.Array`` that spans several processes
    (:func:`spans_processes`): its shards are gathered from every process first
    (:func:`jax.experimental.multihost_utils.process_allgather`, a collective: every process
    must call it), so each process gets the same whole (n, ...) array. The cost is one
    all-gather of ``a``; the blocked Stein-kernel sums replicate the per-point features on every
    device anyway (:mod:`numpyro_dsd.stein.tiling`).

    Parameters
    ----------
    a : array-like
        Concrete (not traced) values.

    Returns
    -------
    np.ndarray of ``a``'s shape and dtype.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> host_array(jnp.arange(3.0))
    array([0., 1., 2.], dtype=float32)
    """
    if spans_processes(a):
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(a, tiled=True))
    return np.asarray(a)


def real_dtype(a: ArrayLike, name: str) -> np.dtype:
    """The dtype of the array-like ``a``: ``TypeError`` unless it is real numeric (bool, integer
    or floating), ``ValueError`` for ragged nested sequences. Never prints the data."""
    dtype = getattr(a, "dtype", None)
    if dtype is None:
        try:
            dtype = np.asarray(a).dtype
        except (ValueError, TypeError):
            raise ValueError(
                f"{name} must be a rectangular numeric array; got {describe(a)} whose rows have "
                "unequal lengths (ragged nested sequences). Give an (n, d) array."
            ) from None
    dtype = np.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(
            f"{name} is complex ({dtype}); Stein discrepancies need real values. Give {name}.real "
            "if the imaginary part is zero."
        )
    if not (jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_)):
        raise TypeError(f"{name} must be a real numeric array; got {describe(a)} of dtype {dtype}.")
    return dtype


def float_dtype(*arrays: ArrayLike, names: tuple[str, ...] | None = None) -> jnp.dtype:
    """The floating dtype to compute in: the inputs' own (promoted) float type, at least float32
    (float16 and bfloat16 overflow at everyday data scales), else JAX's default float (float64
    under ``jax_enable_x64``, float32 otherwise).

    ``names`` name the arrays in the ``TypeError`` for complex or non-numeric input."""
    names = names or tuple(f"input {i + 1}" for i in range(len(arrays)))
    dtypes = [
        jax.dtypes.canonicalize_dtype(real_dtype(a, name))
        for a, name in zip(arrays, names, strict=True)
    ]
    dtype = jnp.result_type(*dtypes)
    if not jnp.issubdtype(dtype, jnp.floating):
        return jnp.result_type(float)
    return jnp.promote_types(dtype, jnp.float32)


def overflow_fix(dtype: ArrayLike) -> str:
    """What to do when finite values overflow ``dtype``."""
    if np.dtype(dtype) == np.float64:
        return "rescale the data (e.g. standardise the draws and scale the scores to match)."
    return f"rescale the data or enable float64 ({_FLOAT64_SWITCH})."


def check_overflow(a: jax.Array, what: str) -> None:
    """Raise ``ValueError`` if ``a``, computed from finite inputs, is not finite: it overflowed."""
    if not is_concrete(a):
        return
    v = host_array(a)
    if not np.isfinite(v).all():
        raise ValueError(
            f"{what} overflows in {v.dtype} although the inputs are finite: {overflow_fix(v.dtype)}"
        )


def check_finite(a: ArrayLike, name: str, hint: str, batch_ndim: int = 1) -> None:
    """Raise ``ValueError`` if ``a`` has NaN/inf, naming the rows (the first ``batch_ndim`` axes
    index the rows; a row's index is a tuple when ``batch_ndim > 1``)."""
    if not is_concrete(a):
        return
    batch = np.shape(a)[:batch_ndim]
    bad = ~np.isfinite(host_array(a)).reshape(*batch, -1).all(axis=-1)
    if bad.any():
        first = np.unravel_index(int(np.argmax(bad)), batch)
        row = int(first[0]) if batch_ndim == 1 else tuple(int(k) for k in first)
        raise ValueError(
            f"{name} contains NaN or inf in {int(bad.sum())} of {bad.size} rows "
            f"(first at row {row}). {hint}"
        )


def cast_finite(a: ArrayLike, name: str, dtype: jnp.dtype, hint: str) -> jax.Array:
    """``a`` as a JAX array of ``dtype``: ``ValueError`` if ``a`` has NaN/inf (with ``hint``), or
    if finite values overflow in the cast (e.g. 1e150 to float32)."""
    if not is_concrete(a):
        return jnp.asarray(a, dtype=dtype)
    host = host_array(a)
    check_finite(host, name, hint)
    if host.dtype == dtype:  # a process-local copy of an array spread over processes
        return jnp.asarray(a if isinstance(a, jax.Array) and not spans_processes(a) else host)
    with np.errstate(over="ignore"):
        cast = host.astype(dtype)
    if jnp.issubdtype(host.dtype, jnp.floating) and not np.isfinite(cast).all():
        big = float(np.max(np.abs(host)))
        raise ValueError(
            f"{name} overflows in {np.dtype(dtype)} (its largest magnitude is {big:.3g}): "
            f"{overflow_fix(dtype)}"
        )
    return jnp.asarray(cast)


def as_points(x: ArrayLike, name: str = "x", dtype: jnp.dtype | None = None) -> jax.Array:
    """Check ``x`` is a finite (n, d) array with n >= 1 and d >= 1; return it as a JAX array
    of ``dtype`` (default: :func:`float_dtype` of ``x``)."""
    dtype = float_dtype(x, names=(name,)) if dtype is None else dtype
    shape = np.shape(x)
    if len(shape) != 2:
        hint = {
            1: f" For one-dimensional draws use {name}[:, None].",
            3: f" For draws grouped by chain use {name}[c] per chain or {name}.reshape(-1, d).",
        }.get(len(shape), "")
        raise ValueError(f"{name} must be a 2-D (n, d) array; got shape {shape}.{hint}")
    if shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"{name} is empty (shape {shape}); it needs n >= 1 points of d >= 1.")
    return cast_finite(
        x, name, dtype, "Drop or fix those draws (a diverged chain or draws outside the support?)."
    )


def check_pair(x: jax.Array, scores: ArrayLike, dtype: jnp.dtype) -> jax.Array:
    """Check ``scores`` matches ``x`` in shape and is finite."""
    real_dtype(scores, "scores")
    if np.shape(scores) != x.shape:
        raise ValueError(
            f"scores must have the shape of x {x.shape} (one gradient of log p per point); "
            f"got {np.shape(scores)}."
        )
    return cast_finite(
        scores, "scores", dtype, "The log density's gradient is not finite there: check the target."
    )


def check_weights(weights: ArrayLike | None, n: int, dtype: jnp.dtype) -> jax.Array:
    """Weights (n,), non-negative, summing to one; ``None`` means 1/n each."""
    if weights is None:
        return jnp.full((n,), 1.0 / n, dtype=dtype)
    real_dtype(weights, "weights")
    if np.shape(weights) != (n,):
        raise ValueError(f"weights must have shape ({n},), one per point; got {np.shape(weights)}.")
    if spans_processes(weights):
        weights = host_array(weights)
    w = jnp.asarray(weights, dtype=dtype)
    if is_concrete(w):
        wn = np.asarray(weights, dtype=np.float64)
        if not np.all(np.isfinite(wn)) or np.any(wn < 0):
            raise ValueError("weights must be finite and non-negative.")
        if abs(wn.sum() - 1.0) > 1e-5:
            raise ValueError(
                f"weights must sum to one; they sum to {wn.sum():.6g}. Normalise them."
            )
    return w


def positive_int(value: object, name: str) -> int:
    """``value`` as an ``int``: ``TypeError`` unless it is an integer (not a bool), ``ValueError``
    unless it is >= 1."""
    try:
        out = None if isinstance(value, bool | np.bool_) else operator.index(value)
    except TypeError:
        out = None
    if out is None:
        raise TypeError(f"{name} must be a positive integer; got {describe(value)}.")
    if out < 1:
        raise ValueError(f"{name} must be a positive integer; got {out}.")
    return out


def real_number(value: object, name: str) -> float:
    """``value`` as a finite ``float``: ``TypeError`` unless it is a real number (a Python or
    NumPy scalar, or a concrete 0-d array; not a bool), ``ValueError`` if NaN or inf."""
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"{name} must be a concrete number, not a traced value; set it outside jit."
        )
    is_bool = isinstance(value, bool | np.bool_)
    numeric = isinstance(value, numbers.Real) or (
        hasattr(value, "dtype") and np.ndim(value) == 0 and np.dtype(value.dtype).kind in "iuf"
    )
    if is_bool or not numeric:
        raise TypeError(f"{name} must be a real number; got {describe(value)}.")
    out = float(value)
    if not np.isfinite(out):
        raise ValueError(f"{name} must be finite; got {out}.")
    return out


def square_matrix(a: ArrayLike, name: str) -> None:
    """Check ``a`` is a real (d, d) matrix with finite entries (entries only when concrete)."""
    real_dtype(a, name)
    shape = np.shape(a)
    if len(shape) != 2 or shape[0] != shape[1]:
        hint = " For a scalar s use s * jnp.eye(d)." if len(shape) == 0 else ""
        raise ValueError(f"{name} must be a square (d, d) matrix; got shape {shape}.{hint}")
    if is_concrete(a) and not np.isfinite(host_array(a)).all():
        raise ValueError(f"{name} contains NaN or inf; give a finite matrix.")
