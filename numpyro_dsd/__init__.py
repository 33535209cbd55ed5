"""numpyro-dsd: kernel Stein discrepancies and diffusion Stein methods for NumPyro.

The top level exposes the public API; the subpackages show the architecture
(docs/architecture.md), each importing only from the layers below it:

- :mod:`numpyro_dsd.stein`: base kernels (:class:`IMQ`, :class:`Gaussian`), diffusions
  (:class:`Identity`, :class:`Constant`, :class:`PositionDependent`) and the blocked Stein-kernel
  engine behind :func:`ksd`, :func:`ksd_squared`, :func:`stein_matrix`;
- :mod:`numpyro_dsd.model`: a NumPyro model's flat unconstrained layout and scores
  (:func:`model_draws`);
- :mod:`numpyro_dsd.flows`: :class:`FlowDiffusion`, :func:`fit_flow`, :func:`fit_flow_to_samples`,
  :class:`ContinuousFlow`, :func:`dsm_path`, :func:`dsm`, :func:`implicit_dsm`, the Riemannian view;
- :mod:`numpyro_dsd.mcmc`: :func:`ksd_diagnostic`, :func:`ksd_test`, :func:`ksd_trace`,
  :func:`stein_thin`, and :func:`diagnose` with the ``.stein`` accessor;
- :mod:`numpyro_dsd.svgd`: :class:`SVGD` with :class:`ConstantPreconditioner` and
  :class:`FlowPreconditioner`, and its functional core;
- :mod:`numpyro_dsd.arviz`: InferenceData/DataTree conversion, :func:`stein_summary`,
  :func:`plot_ksd`, :func:`plot_ksd_trace`, :func:`plot_svgd_trace` (ArviZ and matplotlib are
  imported on first use, not by ``import numpyro_dsd``);
- :mod:`numpyro_dsd.datasets`: six posteriordb posteriors with reference draws.

``import numpyro_dsd`` registers the ``stein`` accessor on :class:`xarray.DataTree` and
:class:`xarray.Dataset` (:mod:`numpyro_dsd.mcmc.accessor`): ``dt.stein.diagnose(model)``,
``ds.stein.summary()``, ``ds.stein.plot_ksd()``. Nothing else needs to be called.
"""

from numpyro_dsd.arviz.plots import plot_ksd, plot_ksd_trace, plot_svgd_trace
from numpyro_dsd.arviz.summary import stein_summary
from numpyro_dsd.flows.continuous import ContinuousFlow, dsm_path
from numpyro_dsd.flows.diffusion import FlowDiffusion
from numpyro_dsd.flows.fitting import fit_flow, fit_flow_to_samples
from numpyro_dsd.flows.score_matching import dsm, implicit_dsm
from numpyro_dsd.mcmc.accessor import diagnose
from numpyro_dsd.mcmc.bootstrap import ksd_test
from numpyro_dsd.mcmc.diagnostic import ksd_diagnostic
from numpyro_dsd.mcmc.prefix import ksd_trace
from numpyro_dsd.mcmc.thinning import FailedDiagnosticWarning, stein_thin
from numpyro_dsd.model.targets import model_draws
from numpyro_dsd.stein.diffusion import Constant, Identity, PositionDependent
from numpyro_dsd.stein.kernels import IMQ, Gaussian
from numpyro_dsd.stein.ksd import ksd, ksd_squared, stein_matrix
from numpyro_dsd.stein.thinning import thin_indices
from numpyro_dsd.svgd.infer import (
    SVGD,
    NonFiniteStepError,
    SVGDDivergenceWarning,
    SVGDInterrupted,
    SVGDRunResult,
)
from numpyro_dsd.svgd.preconditioners import (
    ConstantPreconditioner,
    FlowPreconditioner,
    reestimate_every,
)

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
    "model_draws",
    "ksd_diagnostic",
    "diagnose",
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
    "SVGDInterrupted",
    "SVGDDivergenceWarning",
    "FailedDiagnosticWarning",
    "ConstantPreconditioner",
    "FlowPreconditioner",
    "reestimate_every",
]

__version__ = "0.1.0"
