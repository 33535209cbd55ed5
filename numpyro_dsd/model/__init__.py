"""The NumPyro model layer: a model's flat unconstrained layout, its log density and scores.

One owner for the flattening every other layer uses (docs/architecture.md).
"""

from numpyro_dsd.model.layout import ModelLayout
from numpyro_dsd.model.targets import ModelDraws, latent_sites, log_density_fn, model_draws

__all__ = ["ModelLayout", "ModelDraws", "latent_sites", "log_density_fn", "model_draws"]
