"""Input checks shared by the public functions: clear ``ValueError``s, nothing silently fixed.

Value checks (finiteness, weights summing to one) need concrete arrays; under ``jit`` the inputs
are tracers and only the shape checks run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = ["as_points", "check_finite", "check_pair", "check_weights", "float_dtype"]


def float_dtype(*arrays: ArrayLike) -> jnp.dtype:
    """The floating dtype to compute in: the inputs' own (promoted) float type, else JAX's
    default float (float64 under ``jax_enable_x64``, float32 otherwise)."""
    dtype = jnp.result_type(*arrays)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)


def is_concrete(a: object) -> bool:
    return not isinstance(a, jax.core.Tracer)


def check_finite(a: jax.Array, name: str, hint: str, batch_ndim: int = 1) -> None:
    """Raise ``ValueError`` if ``a`` has NaN/inf, naming the rows (the first ``batch_ndim`` axes
    index the rows; a row's index is a tuple when ``batch_ndim > 1``)."""
    if not is_concrete(a):
        return
    batch = a.shape[:batch_ndim]
    bad = ~np.isfinite(np.asarray(a)).reshape(*batch, -1).all(axis=-1)
    if bad.any():
        first = np.unravel_index(int(np.argmax(bad)), batch)
        row = int(first[0]) if batch_ndim == 1 else tuple(int(k) for k in first)
        raise ValueError(
            f"{name} contains NaN or inf in {int(bad.sum())} of {bad.size} rows "
            f"(first at row {row}). {hint}"
        )


def as_points(x: ArrayLike, name: str = "x", dtype: jnp.dtype | None = None) -> jax.Array:
    """Check ``x`` is a finite (n, d) array with n >= 1 and d >= 1; return it as a JAX array."""
    shape = np.shape(x)
    if len(shape) != 2:
        hint = {
            1: f" For one-dimensional draws use {name}[:, None].",
            3: f" For draws grouped by chain use {name}[c] per chain or {name}.reshape(-1, d).",
        }.get(len(shape), "")
        raise ValueError(f"{name} must be a 2-D (n, d) array; got shape {shape}.{hint}")
    if shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"{name} is empty (shape {shape}); it needs n >= 1 points of d >= 1.")
    out = jnp.asarray(x, dtype=dtype)
    check_finite(
        out, name, "Drop or fix those draws (a diverged chain or draws outside the support?)."
    )
    return out


def check_pair(x: jax.Array, scores: ArrayLike, dtype: jnp.dtype) -> jax.Array:
    """Check ``scores`` matches ``x`` in shape and is finite."""
    if np.shape(scores) != x.shape:
        raise ValueError(
            f"scores must have the shape of x {x.shape} (one gradient of log p per point); "
            f"got {np.shape(scores)}."
        )
    s = jnp.asarray(scores, dtype=dtype)
    check_finite(s, "scores", "The log density's gradient is not finite there: check the target.")
    return s


def check_weights(weights: ArrayLike | None, n: int, dtype: jnp.dtype) -> jax.Array:
    """Weights (n,), non-negative, summing to one; ``None`` means 1/n each."""
    if weights is None:
        return jnp.full((n,), 1.0 / n, dtype=dtype)
    if np.shape(weights) != (n,):
        raise ValueError(f"weights must have shape ({n},), one per point; got {np.shape(weights)}.")
    w = jnp.asarray(weights, dtype=dtype)
    if is_concrete(w):
        wn = np.asarray(w, dtype=np.float64)
        if not np.all(np.isfinite(wn)) or np.any(wn < 0):
            raise ValueError("weights must be finite and non-negative.")
        if abs(wn.sum() - 1.0) > 1e-5:
            raise ValueError(
                f"weights must sum to one; they sum to {wn.sum():.6g}. Normalise them."
            )
    return w
