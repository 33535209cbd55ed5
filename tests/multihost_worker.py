"""One process of the multi-host KSD check (tests/test_multihost.py): not a test module.

Usage::

    python tests/multihost_worker.py PORT NUM_PROCESSES PROCESS_ID OUT.json

Run with ``JAX_PLATFORMS=cpu`` (and ``XLA_FLAGS=--xla_force_host_platform_device_count=K`` for K
CPU devices per process). The process joins ``jax.distributed`` on ``localhost:PORT``, holds its
share of the rows of :func:`draws` as a global ``jax.Array``
(:func:`jax.make_array_from_process_local_data`), computes the KSDs of :func:`cases` and writes
them, with the device counts, to ``OUT.json``. The same draws given whole to every process (a
replicated NumPy array) and a NaN in another process's rows are checked too.
"""

from __future__ import annotations

import json
import sys

import jax
import numpy as np

N, D = 600, 5
#: The row that is made NaN in the bad-input check (in the last process's rows).
NAN_ROW = 587


def draws() -> tuple[np.ndarray, np.ndarray]:
    """Skewed, heavy-tailed draws (n, d) and the scores of a multivariate Student-t target
    (5 degrees of freedom): :math:`s(x) = -(\\nu + d)\\,x / (\\nu + |x|^2)`."""
    rng = np.random.default_rng(19)
    x = rng.standard_t(4.0, size=(N, D)) + 0.3 * rng.exponential(size=(N, D))
    nu = 5.0
    scores = -(nu + D) * x / (nu + np.sum(x * x, axis=1, keepdims=True))
    return x, scores


def weights() -> np.ndarray:
    """Uneven weights (n,) summing to one, for the weighted U-statistic."""
    w = 1.0 + np.sin(np.arange(N)) ** 2
    return w / w.sum()


def cases() -> dict[str, dict[str, object]]:
    """The keyword arguments of each :func:`numpyro_dsd.ksd_squared` call compared."""
    import jax.numpy as jnp

    from numpyro_dsd import Constant

    m = jnp.asarray(np.eye(D) + 0.2 * np.tri(D, k=-1))  # invertible, not symmetric
    return {
        "default": {},
        "constant": {"diffusion": Constant(m), "block_size": 64},
    }


def main(port: int, num_processes: int, process_id: int, out: str) -> None:
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"localhost:{port}",
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=60,
    )
    from jax.sharding import NamedSharding, PartitionSpec

    from numpyro_dsd import ksd, ksd_squared

    x, scores = draws()
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("rows",))
    rows = NamedSharding(mesh, PartitionSpec("rows"))
    # this process's rows: the slices of the global array its own devices hold
    held = rows.addressable_devices_indices_map(x.shape).values()
    lo, hi = min(ix[0].start for ix in held), max(ix[0].stop for ix in held)

    def global_array(a: np.ndarray) -> jax.Array:
        return jax.make_array_from_process_local_data(rows, a[lo:hi], a.shape)

    gx, gs = global_array(x), global_array(scores)
    result: dict[str, object] = {
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "rows": [lo, hi],
        "input_fully_addressable": gx.is_fully_addressable,
    }
    for name, kwargs in cases().items():
        value = ksd_squared(gx, gs, **kwargs)
        result[name] = float(value)
        result[name + "_devices"] = len(value.sharding.device_set)  # tiles on every device
        result[name + "_replicated"] = float(ksd_squared(x, scores, **kwargs))
    w = weights()
    result["weighted_u"] = float(ksd_squared(gx, gs, statistic="u", weights=global_array(w)))
    result["ksd"] = float(ksd(gx, gs))
    bad = x.copy()
    bad[NAN_ROW, 2] = np.nan
    try:
        ksd_squared(global_array(bad), gs)
        result["nan_error"] = None
    except ValueError as err:
        result["nan_error"] = str(err)
    with open(out, "w") as f:
        json.dump(result, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
