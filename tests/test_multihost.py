"""Multi-controller JAX: two processes on localhost, each holding half the rows, get the
single-process KSD (docs/scale.md).

The workers (tests/multihost_worker.py) join ``jax.distributed`` with CPU collectives over gloo,
two CPU devices each (four global devices), and write their values to JSON files.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from numpyro_dsd import ksd, ksd_squared

WORKER = Path(__file__).with_name("multihost_worker.py")
NUM_PROCESSES = 2
DEVICES_PER_PROCESS = 2
TIMEOUT_S = 120


def _worker_module():
    spec = importlib.util.spec_from_file_location("multihost_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    """A port the OS has just handed out and released: no fixed port, so tests running in
    parallel (xdist) never share one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run_workers(tmp_path: Path) -> list[dict]:
    """Start the processes, wait for all (``TIMEOUT_S`` each), and return their JSON results;
    fail with every worker's stderr otherwise. A port taken between ``_free_port`` and the
    coordinator's bind is retried once on a new port."""
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={DEVICES_PER_PROCESS}",
        "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
    }
    for attempt in range(2):
        port = _free_port()
        outs = [tmp_path / f"attempt{attempt}_process{i}.json" for i in range(NUM_PROCESSES)]
        procs = [
            subprocess.Popen(
                [sys.executable, str(WORKER), str(port), str(NUM_PROCESSES), str(i), str(out)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i, out in enumerate(outs)
        ]
        deadline, logs, timed_out = time.monotonic() + TIMEOUT_S, [], False
        for proc in procs:
            try:
                logs.append(proc.communicate(timeout=max(deadline - time.monotonic(), 1.0)))
            except subprocess.TimeoutExpired:
                timed_out = True
                for p in procs:
                    p.kill()
                logs.append(proc.communicate())
        if not timed_out and all(p.returncode == 0 for p in procs):
            return [json.loads(out.read_text()) for out in outs]
        stderr = "\n".join(
            f"--- process {i} (exit {p.returncode}) stderr:\n{err[-4000:]}"
            for i, (p, (_, err)) in enumerate(zip(procs, logs, strict=True))
        )
        if attempt == 0 and not timed_out and "address already in use" in stderr.lower():
            continue
        why = f"timed out after {TIMEOUT_S} s" if timed_out else "failed"
        pytest.fail(f"multi-process workers {why}:\n{stderr}")
    raise AssertionError("unreachable")


@pytest.mark.slow
def test_two_processes_equal_one(x64, tmp_path):
    worker = _worker_module()
    results = _run_workers(tmp_path)
    x, scores = worker.draws()
    here = {name: ksd_squared(x, scores, **kw) for name, kw in worker.cases().items()}
    here["weighted_u"] = ksd_squared(x, scores, statistic="u", weights=worker.weights())
    here["ksd"] = ksd(x, scores)
    n_devices = NUM_PROCESSES * DEVICES_PER_PROCESS
    held = []
    for out in results:
        assert (out["process_count"], out["device_count"]) == (NUM_PROCESSES, n_devices)
        assert not out["input_fully_addressable"]  # each process really held only its rows
        held.append(tuple(out["rows"]))
        for name, value in here.items():
            np.testing.assert_allclose(out[name], float(value), rtol=1e-12, err_msg=name)
        for name in worker.cases():
            assert out[name + "_devices"] == n_devices  # the tiles ran on every process
            np.testing.assert_allclose(out[name + "_replicated"], float(here[name]), rtol=1e-12)
        # a NaN in one process's rows is found, with its global row, on every process
        assert f"first at row {worker.NAN_ROW})" in out["nan_error"]
    half = worker.N // 2
    assert sorted(held) == [(0, half), (half, worker.N)]
