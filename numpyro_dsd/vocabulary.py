"""The names every layer shares, in one place: dimensions, the default seed, renamed arguments.

The package follows NumPyro's vocabulary for arguments (``num_*`` for counts, ``rng_key``,
``model_args``/``model_kwargs``) and ArviZ's for dimensions (``chain``, ``draw``). This module
imports nothing from :mod:`numpyro_dsd`, so every module may import it.

**Dimensions.** :data:`CHAIN` and :data:`DRAW` are ArviZ's. :data:`PREFIX` is the dimension of
the KSD along a chain: its coordinate is the prefix length m (the curve's value at m is the KSD
of the first m draws), never a draw index.

**The key rule.** Every entry point that draws random numbers takes ``rng_key``, a
``jax.random.key`` as NumPyro takes it. ``rng_key=None`` means ``jax.random.key(DEFAULT_SEED)``
(:func:`rng_key_or_default`), and a result that records its settings records the key it used
(:func:`describe_rng_key`): the diagnostic's ``rng_key`` attribute,
``ThinningResult.settings["rng_key"]``, ``BootstrapResult.rng_key``. So a default is never
silent. Anything else, an int seed included, is refused with an error naming ``rng_key``
(:func:`check_rng_key`), before any work is done. An entry point that needs randomness for
several purposes (the diagnostic: a flow fit and bootstrap signs) splits the key it was given,
one sub-key per purpose; no key serves two purposes.

**Renamed arguments** stay accepted for one release with a :class:`DeprecationWarning` naming
the new argument (:func:`renamed_arguments`, :func:`warn_renamed`).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import numpy as np

__all__ = [
    "CHAIN",
    "DRAW",
    "PREFIX",
    "DIFFUSIONS",
    "DEFAULT_SEED",
    "rng_key_or_default",
    "check_rng_key",
    "describe_rng_key",
    "describe",
    "warn_renamed",
    "renamed_arguments",
]

#: ArviZ's dimension of chains.
CHAIN = "chain"
#: ArviZ's dimension of draws within a chain.
DRAW = "draw"
#: The dimension of the KSD along a chain; coordinate: the prefix length m (first m draws).
PREFIX = "prefix"

#: The diffusions the diagnostic and the command name by a string (``"precond"`` is the
#: deprecated name of ``"covariance"``).
DIFFUSIONS = ("identity", "covariance", "flow")

#: The seed of ``rng_key=None``: ``jax.random.key(DEFAULT_SEED)``.
DEFAULT_SEED = 0

F = TypeVar("F", bound=Callable[..., Any])


def describe_rng_key(rng_key: jax.Array | None) -> str:
    """How a result records its key: the default, or the given key's data.

    Examples
    --------
    >>> describe_rng_key(None)
    'jax.random.key(0) (default: rng_key=None)'
    >>> describe_rng_key(jax.random.key(7))
    'key_data [0, 7] (given)'
    """
    if rng_key is None:
        return f"jax.random.key({DEFAULT_SEED}) (default: rng_key=None)"
    try:
        key = rng_key
        if jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
            key = jax.random.key_data(key)
        return f"key_data {np.asarray(key).tolist()} (given)"
    except (TypeError, jax.errors.ConcretizationTypeError):  # a traced key
        return "traced key (given)"


def rng_key_or_default(rng_key: jax.Array | None) -> tuple[jax.Array, str]:
    """The key rule: ``rng_key``, or ``jax.random.key(DEFAULT_SEED)`` when it is None, and the
    record a result stores (:func:`describe_rng_key`).

    Examples
    --------
    >>> key, record = rng_key_or_default(None)
    >>> record
    'jax.random.key(0) (default: rng_key=None)'
    """
    check_rng_key(rng_key)
    key = jax.random.key(DEFAULT_SEED) if rng_key is None else rng_key
    return key, describe_rng_key(rng_key)


def check_rng_key(rng_key: Any) -> None:
    """The key rule's check: ``rng_key`` is None, one typed key (``jax.random.key(seed)``) or one
    raw key (``jax.random.PRNGKey(seed)``, uint32 of shape (2,)), as NumPyro takes it.

    Raises
    ------
    TypeError
        Not a key at all (an int seed, a float array ...).
    ValueError
        Keys of the wrong shape (a batch of keys, raw key data of another length).

    Examples
    --------
    >>> check_rng_key(jax.random.key(1))
    >>> check_rng_key(0)
    Traceback (most recent call last):
    ...
    TypeError: rng_key must be a JAX random key, ...; got int 0.
    """
    if rng_key is None:
        return
    dtype = getattr(rng_key, "dtype", None)
    shape = tuple(getattr(rng_key, "shape", ()))
    typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
    if typed and shape == ():
        return
    if not typed and dtype == np.uint32 and shape == (2,):
        return
    what = f"a batch of keys of shape {shape}" if typed else describe(rng_key)
    error = ValueError if typed or dtype == np.uint32 else TypeError
    raise error(
        "rng_key must be a JAX random key, e.g. rng_key=jax.random.key(0) (a seed is not one); "
        f"got {what}."
    )


def describe(value: Any) -> str:
    """A short description of ``value`` for an error message, never the data itself: a scalar
    with its type (``int 0``), an array by type, shape and dtype, a sequence by its length."""
    if hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, np.generic):
        return f"{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, list | tuple):
        return f"{type(value).__name__} of length {len(value)}"
    text = repr(value)
    return f"{type(value).__name__} {text}" if len(text) <= 40 else type(value).__name__


def warn_renamed(old: str, new: str, where: str, *, stacklevel: int = 3) -> None:
    """Emit the :class:`DeprecationWarning` for an argument (or value) renamed ``old`` -> ``new``.

    ``stacklevel`` counts from this function: 3 points at the caller of the function that calls
    this one.
    """
    warnings.warn(
        f"{where}: {old!r} is deprecated and will be removed in the next release; use {new!r}.",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def renamed_arguments(**old_to_new: str) -> Callable[[F], F]:
    """Decorator: accept the old keyword names ``old=new`` for one release, with a warning.

    The decorated function shows only the new names (``inspect.signature`` follows
    ``__wrapped__``). Passing both the old and the new name is a ``TypeError``.

    Examples
    --------
    >>> @renamed_arguments(n_boot="num_bootstrap")
    ... def f(*, num_bootstrap=10):
    ...     return num_bootstrap
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     f(n_boot=3)
    3
    >>> caught[0].category.__name__, str(caught[0].message).endswith("use 'num_bootstrap'.")
    ('DeprecationWarning', True)
    """

    def decorate(fn: F) -> F:
        where = fn.__qualname__.replace(".__init__", "")

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in old_to_new.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{where}: pass {new!r} only ({old!r} is its old name).")
                    warn_renamed(old, new, where)
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
