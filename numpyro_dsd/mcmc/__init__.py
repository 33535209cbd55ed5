"""The MCMC sample-quality layer: draws and scores from NumPyro/ArviZ inputs, the diagnostic,
its wild-bootstrap test, the KSD along each chain and Stein thinning (docs/diagnostic.md).
"""

from numpyro_dsd.mcmc.bootstrap import ksd_test
from numpyro_dsd.mcmc.diagnostic import ksd_diagnostic
from numpyro_dsd.mcmc.inputs import with_stein_inputs
from numpyro_dsd.mcmc.prefix import ksd_trace
from numpyro_dsd.mcmc.thinning import FailedDiagnosticWarning, stein_thin
from numpyro_dsd.stein.thinning import thin_indices

__all__ = [
    "FailedDiagnosticWarning",
    "ksd_diagnostic",
    "ksd_test",
    "ksd_trace",
    "stein_thin",
    "thin_indices",
    "with_stein_inputs",
]
