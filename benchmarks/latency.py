"""Latency a person notices: first against warm times of ``ksd_diagnostic`` and the command.

The posterior of a Bayesian linear regression (beta ~ N(0, I_d), 50 observations, d = 10) with
exact draws, 4 chains x 1000, as an ordinary ArviZ netCDF file (a ``posterior`` group only), the
model in a ``.py`` file and its keyword arguments in a ``.json`` file. Measured, each in a fresh
process:

- ``ksd_diagnostic`` in Python (no persistent cache): the first call (compilation included),
  the second call in the same process with new draws of the same shape (the in-memory caches:
  ``model_draws`` no longer recompiles), on the same model object;
- ``numpyro-dsd diagnose run.nc --model model.py:regression --data data.json``: the first run
  in a fresh persistent-cache folder (``XDG_CACHE_HOME`` set to an empty folder), then a second
  run in a new process (compilations read from the cache); then the same two runs with
  ``--no-cache``.

Run: ``.venv/bin/python benchmarks/latency.py [--chains 4] [--n 1000] [--d 10]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODEL = """
import numpyro
import numpyro.distributions as dist


def regression(X, y=None):
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    numpyro.sample("y", dist.Normal(X @ beta, 1.0), obs=y)
"""

IN_PROCESS = """
import json, sys, time
import numpy as np
import jax
sys.path.insert(0, {folder!r})
from model import regression
from numpyro_dsd import ksd_diagnostic
data = {{k: np.asarray(v) for k, v in json.load(open({data!r})).items()}}
times = []
for seed in (0, 1):
    draws = {{"beta": np.load({draws!r})[seed]}}
    start = time.perf_counter()
    ds = ksd_diagnostic(draws, regression, model_kwargs=data, rng_key=jax.random.key(seed))
    times.append(time.perf_counter() - start)
print(json.dumps(times))
"""


def posterior(X: np.ndarray, y: np.ndarray, shape: tuple[int, int], seed: int) -> np.ndarray:
    """Exact draws of beta, ``(*shape, d)``."""
    cov = np.linalg.inv(X.T @ X + np.eye(X.shape[1]))
    z = np.random.default_rng(seed).normal(size=(*shape, X.shape[1]))
    return cov @ X.T @ y + z @ np.linalg.cholesky(cov).T


def write_inputs(folder: Path, chains: int, n: int, d: int) -> None:
    """``model.py``, ``data.json``, ``run.nc`` (posterior group) and ``draws.npy`` (two sets)."""
    import arviz as az

    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, d))
    y = X @ rng.normal(size=d) + rng.normal(size=50)
    (folder / "model.py").write_text(MODEL)
    (folder / "data.json").write_text(json.dumps({"X": X.tolist(), "y": y.tolist()}))
    beta = posterior(X, y, (chains, n), 0)
    np.save(folder / "draws.npy", np.stack([beta, posterior(X, y, (chains, n), 1)]))
    posterior_group = {"beta": beta}
    if _arviz_1():
        data = az.from_dict({"posterior": posterior_group})
    else:
        data = az.from_dict(posterior=posterior_group)
    data.to_netcdf(str(folder / "run.nc"))


def _arviz_1() -> bool:
    import arviz as az

    return int(az.__version__.split(".")[0]) >= 1


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--d", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_inputs(folder, args.chains, args.n, args.d)
        env = {**os.environ, "XDG_CACHE_HOME": str(folder / "cache")}
        env.pop("NUMPYRO_DSD_NO_CACHE", None)
        paths = {k: str(folder / k) for k in ("data.json", "draws.npy")}
        script = IN_PROCESS.format(folder=tmp, data=paths["data.json"], draws=paths["draws.npy"])
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True
        ).stdout
        first, second = json.loads(out.strip().splitlines()[-1])
        print(f"ksd_diagnostic, one process: first call {first:.1f} s, second {second:.1f} s")
        cli = [sys.executable, "-m", "numpyro_dsd.cli", "diagnose", str(folder / "run.nc")]
        cli += ["--model", f"{folder / 'model.py'}:regression", "--data", paths["data.json"]]
        for label, extra in (("persistent cache", []), ("--no-cache", ["--no-cache"])):
            runs = [timed(cli + extra, env) for _ in range(2)]
            print(f"CLI diagnose, {label}: first run {runs[0]:.1f} s, second run {runs[1]:.1f} s")
        size = sum(f.stat().st_size for f in (folder / "cache").rglob("*") if f.is_file())
        print(f"cache folder: {size / 1e6:.1f} MB; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
