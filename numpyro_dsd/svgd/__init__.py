"""Stein variational gradient descent: the pure functional core (:mod:`numpyro_dsd.svgd.core`,
``init``/``step`` on NamedTuple states), preconditioners (a change of coordinates the particles
move in) and the NumPyro-style :class:`SVGD` class (docs/svgd.md)."""

from numpyro_dsd.svgd.core import (
    SVGDInfo,
    SVGDState,
    as_optax,
    build_step,
    init,
    reestimate,
    shard_state,
    stein_force,
)
from numpyro_dsd.svgd.infer import SVGD, NonFiniteStepError, SVGDRunResult
from numpyro_dsd.svgd.preconditioners import (
    ConstantPreconditioner,
    FlowParams,
    FlowPreconditioner,
    reestimate_every,
)

__all__ = [
    "SVGD",
    "SVGDRunResult",
    "NonFiniteStepError",
    "ConstantPreconditioner",
    "FlowPreconditioner",
    "FlowParams",
    "reestimate_every",
    "reestimate",
    "SVGDState",
    "SVGDInfo",
    "init",
    "build_step",
    "stein_force",
    "as_optax",
    "shard_state",
]
