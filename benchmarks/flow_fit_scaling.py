"""Cost and quality of the default ``fit_flow`` against the dimension (issue 15, item 4).

The model is NumPyro's ``stochastic_volatility.py`` on T synthetic returns (d = T + 2: the
log-volatility random walk, its scale and the Student-t degrees of freedom), the one real model
whose dimension can be dialled. For each d: wall seconds of one ``fit_flow(model, returns)``
call with every default (2000 steps, compilation included, as a user meets it), the steps whose
loss was not finite, the step-size factor it ended with, the median loss over the first and last
tenth of the steps, and the PSIS k-hat of the flow as an importance proposal.

Run: ``.venv/bin/python benchmarks/flow_fit_scaling.py [--dims 12 52 102 302]``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import zoo_models as zm  # noqa: E402
from flow_models import returns  # noqa: E402

from numpyro_dsd import fit_flow  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dims", type=int, nargs="*", default=[12, 52, 102, 302])
    args = parser.parse_args()
    print(f"# {' '.join(sys.argv)}  ({datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC)")
    print("| d | fit s | non-finite | step factor | loss (first → last tenth) | k̂ |")
    print("|---:|---:|---:|---:|---|---:|")
    for d in args.dims:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the k-hat warning: the table has it
            fit = fit_flow(zm.stochastic_volatility, returns(d - 2), progress_bar=False)
        s, seconds = fit.summary(), time.perf_counter() - t0
        print(
            f"| {d} | {seconds:.1f} | {s['num_nonfinite']} | {s['step_scale']:g} | "
            f"{s['loss_first']:.4g} → {s['loss_last']:.4g} | {s['khat']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
