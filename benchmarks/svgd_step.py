"""SVGD per-step time: the current step (force and KSD² from the Stein-kernel engine's tiles)
against the step as it was before it moved onto the engine (hand-written row blocks), in one
process, interleaved, at d = 50 and 100 particles.

The old functional core is read from git (``numpyro_dsd/svgd/core.py`` at commit ``e7aedd4``, the
first commit of the subpackage layout) into a temporary module; both run the same targets, initial
particles, kernel and optimizer through ``benchmarks/svgd.py``'s harness (the best of 3 jitted
100-step ``lax.scan`` chunks per round, the best over rounds). Run from the repository root::

    .venv/bin/python benchmarks/svgd_step.py [rounds]
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import jax
import optax

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import svgd as harness  # noqa: E402  (benchmarks/svgd.py)

from numpyro_dsd.svgd import core as current  # noqa: E402

BEFORE = "e7aedd4"


def old_core() -> object:
    """``numpyro_dsd/svgd/core.py`` at :data:`BEFORE`, imported as a module."""
    source = subprocess.run(
        ["git", "show", f"{BEFORE}:numpyro_dsd/svgd/core.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "svgd_core_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("svgd_core_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(rounds: int = 7) -> None:
    warnings.simplefilter("ignore", DeprecationWarning)  # the old core uses old argument names
    before = old_core()
    print(f"jax {jax.__version__}, {jax.device_count()} device(s), best of {rounds} rounds")
    print("| target | before (ms/step) | after (ms/step) | after / before |")
    print("|---|---|---|---|")
    for name in ("gauss50", "gauss50dense"):
        target = harness.make_target(name, quick=True)
        x0 = jax.random.uniform(jax.random.key(1), (harness.N, target.dim), minval=-2, maxval=2)
        chunks = {}
        for label, module in (("before", before), ("after", current)):
            opt = optax.adagrad(harness.STEP_SIZE)
            step = module.build_step(target.log_prob, opt)
            state = module.init(x0, target.log_prob, opt)
            chunk = harness.chunk_fn(lambda s, step=step: step(s)[0])
            jax.block_until_ready(chunk(state))
            chunks[label] = (chunk, state)
        best = {label: float("inf") for label in chunks}
        for _ in range(rounds):
            for label, (chunk, state) in chunks.items():
                best[label] = min(best[label], harness.time_chunk(chunk, state))
        ratio = best["after"] / best["before"]
        print(f"| {name} | {best['before']:.4f} | {best['after']:.4f} | {ratio:.3f} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
