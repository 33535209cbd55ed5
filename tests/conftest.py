"""Shared fixtures. Float64 is switched on per test (``x64``) and restored afterwards."""

import jax
import pytest


@pytest.fixture
def x64():
    """Run the test with ``jax_enable_x64`` on, then restore the previous setting."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)
