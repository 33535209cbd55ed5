"""Reference posteriors with answers nobody here produced: five posteriordb ports with their
Stan reference draws (:mod:`numpyro_dsd.datasets.posteriordb`)."""
