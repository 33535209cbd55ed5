"""Stein variational gradient descent: the pure functional core (:mod:`numpyro_dsd.svgd.core`,
``init``/``step`` on NamedTuple states), preconditioners (a change of coordinates the particles
move in) and the NumPyro-style :class:`~numpyro_dsd.SVGD` class (docs/svgd.md)."""

from numpyro_dsd.svgd.core import (
    Monitor,
    SVGDInfo,
    SVGDState,
    as_optax,
    build_step,
    init,
    ksd_rising,
    moment_force,
    monitor_ksd,
    reestimate,
    shard_state,
    stein_force,
)
from numpyro_dsd.svgd.finishing import finish, gaussian_tails
from numpyro_dsd.svgd.infer import (
    SVGD,
    NonFiniteStepError,
    SVGDDivergenceWarning,
    SVGDInterrupted,
    SVGDRunResult,
)
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
    "SVGDInterrupted",
    "SVGDDivergenceWarning",
    "ConstantPreconditioner",
    "FlowPreconditioner",
    "FlowParams",
    "reestimate_every",
    "reestimate",
    "SVGDState",
    "SVGDInfo",
    "Monitor",
    "monitor_ksd",
    "moment_force",
    "ksd_rising",
    "init",
    "build_step",
    "finish",
    "gaussian_tails",
    "stein_force",
    "as_optax",
    "shard_state",
]
