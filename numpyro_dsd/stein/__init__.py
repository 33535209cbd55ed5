"""The Stein layer: base kernels, diffusion matrices M(x) and the one blocked Stein-kernel engine.

Everything above (flows, the MCMC diagnostic, SVGD) evaluates Stein kernels through
:func:`~numpyro_dsd.stein.engine.prepare` and the tile sums of :mod:`numpyro_dsd.stein.tiling`.
Nothing here knows about NumPyro models, flows or ArviZ (docs/architecture.md).
"""

from numpyro_dsd.stein.diffusion import (
    Constant,
    Diffusion,
    DiffusionFeatures,
    Identity,
    PositionDependent,
)
from numpyro_dsd.stein.engine import SteinKernel, prepare
from numpyro_dsd.stein.kernels import IMQ, Gaussian, default_kernel, svgd_kernel
from numpyro_dsd.stein.ksd import ksd, ksd_squared, stein_matrix
from numpyro_dsd.stein.thinning import greedy_stein, thin_indices

__all__ = [
    "IMQ",
    "Gaussian",
    "default_kernel",
    "svgd_kernel",
    "Diffusion",
    "DiffusionFeatures",
    "Identity",
    "Constant",
    "PositionDependent",
    "SteinKernel",
    "prepare",
    "ksd",
    "ksd_squared",
    "stein_matrix",
    "greedy_stein",
    "thin_indices",
]
