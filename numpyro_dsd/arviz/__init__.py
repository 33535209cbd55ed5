"""Reporting through ArviZ: conversion to and from InferenceData (ArviZ 0.x) and DataTree
(ArviZ 1.x), storage, the summary table and plots.

ArviZ and matplotlib are imported by the first function that needs them, never by
``import numpyro_dsd``.
"""

from numpyro_dsd.arviz.convert import (
    add_diagnostics,
    add_stein_inputs,
    arviz_1,
    from_stein_inputs,
    from_svgd,
    get_group,
    is_inference_data,
    load,
    posterior_dict,
    read_stein_inputs,
    save,
)
from numpyro_dsd.arviz.plots import plot_ksd, plot_ksd_trace, plot_svgd_trace
from numpyro_dsd.arviz.summary import stein_summary

__all__ = [
    "add_diagnostics",
    "add_stein_inputs",
    "arviz_1",
    "from_stein_inputs",
    "from_svgd",
    "get_group",
    "is_inference_data",
    "load",
    "posterior_dict",
    "read_stein_inputs",
    "save",
    "plot_ksd",
    "plot_ksd_trace",
    "plot_svgd_trace",
    "stein_summary",
]
