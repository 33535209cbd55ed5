"""Flows: the bijection interface, fitted-flow values, fitting (NeuTra, samples), the flow
diffusion, continuous flows, diffusion score matching and the Riemannian view (docs/theory.md).
"""

from numpyro_dsd.flows.bijections import Bijection, NotInvertibleError, as_bijection, inverse
from numpyro_dsd.flows.continuous import ContinuousFlow, dsm_path
from numpyro_dsd.flows.diffusion import FlowDiffusion
from numpyro_dsd.flows.fitted import FittedFlow, FlowFit, FlowSpec
from numpyro_dsd.flows.fitting import fit_flow, fit_flow_to_samples
from numpyro_dsd.flows.score_matching import dsm, implicit_dsm

__all__ = [
    "Bijection",
    "NotInvertibleError",
    "as_bijection",
    "inverse",
    "ContinuousFlow",
    "dsm_path",
    "FlowDiffusion",
    "FittedFlow",
    "FlowFit",
    "FlowSpec",
    "fit_flow",
    "fit_flow_to_samples",
    "dsm",
    "implicit_dsm",
]
