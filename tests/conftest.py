"""Shared fixtures. Float64 is switched on per test (``x64``) or per class (``x64_class``) and
restored afterwards."""

import os
from collections.abc import Iterator
from contextlib import contextmanager

import jax
import pytest

# the command line's persistent compilation cache stays off in tests (subprocesses inherit this):
# no test writes the user's ~/.cache; tests of the cache itself set their own folder
os.environ.setdefault("NUMPYRO_DSD_NO_CACHE", "1")


@contextmanager
def float64() -> Iterator[None]:
    """``jax_enable_x64`` on inside the block, the previous setting restored after it.

    JAX's caches are cleared on both switches: after toggling x64, cached conversions of the same
    numpy array can come back in the other precision (seen with jax 0.10 after an MCMC run under
    x64), which then mixes float32 and float64 inputs of compiled functions.
    """
    previous = jax.config.read("jax_enable_x64")
    jax.clear_caches()
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)
        jax.clear_caches()


@pytest.fixture
def x64() -> Iterator[None]:
    """Float64 for one test."""
    with float64():
        yield


@pytest.fixture(scope="class")
def x64_class() -> Iterator[None]:
    """Float64 for a whole test class (one recompilation instead of one per test)."""
    with float64():
        yield
