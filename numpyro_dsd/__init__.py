"""numpyro-dsd: kernel Stein discrepancies and diffusion Stein methods for NumPyro.

The top level exposes the discrepancy (:func:`ksd`, :func:`ksd_squared`, :func:`stein_matrix`),
the base kernels (:class:`IMQ`, :class:`Gaussian`) and the diffusions (:class:`Identity`,
:class:`Constant`, :class:`PositionDependent`, :class:`FlowDiffusion`). Scores of NumPyro models
live in :mod:`numpyro_dsd.targets`; flows are learned by :func:`fit_flow` and
:func:`fit_flow_to_samples`; diffusion score matching is :func:`dsm` / :func:`implicit_dsm`, the
Riemannian view :mod:`numpyro_dsd.riemannian`, continuous flows :class:`ContinuousFlow`. The MCMC
diagnostic is :func:`ksd_diagnostic` (with :func:`ksd_test`, :func:`ksd_trace`, :func:`stein_thin`,
:func:`stein_summary`, :func:`plot_ksd`, :func:`plot_ksd_trace`; ArviZ storage in
:mod:`numpyro_dsd.arviz_io`) and the ``numpyro-dsd`` command (:mod:`numpyro_dsd.cli`). Stein
variational gradient descent is :class:`SVGD` (plain, :class:`ConstantPreconditioner`,
:class:`FlowPreconditioner`), with its functional core in :mod:`numpyro_dsd.svgd`. Five real
posteriors with reference draws, ported from posteriordb, are in :mod:`numpyro_dsd.posteriordb`.
"""

from numpyro_dsd.along_chain import ksd_trace
from numpyro_dsd.arviz_io import stein_summary
from numpyro_dsd.bootstrap import ksd_test
from numpyro_dsd.continuous import ContinuousFlow, dsm_path
from numpyro_dsd.diagnostic import ksd_diagnostic
from numpyro_dsd.diffusion import Constant, FlowDiffusion, Identity, PositionDependent
from numpyro_dsd.flows import fit_flow, fit_flow_to_samples
from numpyro_dsd.kernels import IMQ, Gaussian
from numpyro_dsd.plots import plot_ksd, plot_ksd_trace, plot_svgd_trace
from numpyro_dsd.preconditioners import ConstantPreconditioner, FlowPreconditioner
from numpyro_dsd.score_matching import dsm, implicit_dsm
from numpyro_dsd.stein import ksd, ksd_squared, stein_matrix
from numpyro_dsd.svgd_infer import SVGD, NonFiniteStepError, SVGDRunResult
from numpyro_dsd.thinning import stein_thin, thin_indices

__all__ = [
    "IMQ",
    "Gaussian",
    "Identity",
    "Constant",
    "PositionDependent",
    "FlowDiffusion",
    "fit_flow",
    "fit_flow_to_samples",
    "ContinuousFlow",
    "dsm_path",
    "dsm",
    "implicit_dsm",
    "ksd",
    "ksd_squared",
    "stein_matrix",
    "ksd_diagnostic",
    "ksd_test",
    "ksd_trace",
    "stein_thin",
    "thin_indices",
    "stein_summary",
    "plot_ksd",
    "plot_ksd_trace",
    "SVGD",
    "plot_svgd_trace",
    "SVGDRunResult",
    "NonFiniteStepError",
    "ConstantPreconditioner",
    "FlowPreconditioner",
]

__version__ = "0.1.0"
