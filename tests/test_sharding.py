"""Sharded evaluation: 4 forced host devices give the value of 1 device (to rounding)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

from numpyro_dsd import IMQ, PositionDependent, ksd_squared

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp, numpy as np
    from numpyro_dsd import IMQ, PositionDependent, ksd_squared
    x = np.random.default_rng(0).normal(size=(1500, 3))
    diff = PositionDependent(lambda p: jnp.eye(3) * (1.0 + 0.1 * jnp.tanh(p @ p)))
    out = {"n_devices": len(jax.local_devices())}
    for name, kw in {"identity": {}, "position": {"diffusion": diff}}.items():
        out[name] = float(ksd_squared(x, -x, kernel=IMQ(bandwidth="med"), block_size=64, **kw))
        out[name + "_one"] = float(ksd_squared(
            x, -x, kernel=IMQ(bandwidth="med"), block_size=64, devices=jax.local_devices()[:1], **kw
        ))
    from numpyro_dsd.mcmc.bootstrap import sign_process, wild_bootstrap
    from numpyro_dsd.stein.engine import prepare
    sk = prepare(x, -x, kernel=IMQ(bandwidth="med").frozen(x))
    signs = sign_process(jax.random.key(1), 1500, 50, 0.01)
    for name, devs in {"jumps": None, "jumps_one": jax.local_devices()[:1]}.items():
        res = wild_bootstrap(sk, signs, block_size=64, devices=devs, method="jumps")
        out[name] = np.asarray(res.replicates).tolist()
    for name, devs in {"nystrom": None, "nystrom_one": jax.local_devices()[:1]}.items():
        out[name] = float(ksd_squared(x, -x, kernel=IMQ(bandwidth="med"), block_size=64,
                                      devices=devs, estimator="nystrom", num_inducing=100))
    print(json.dumps(out))
    """
)


def test_four_host_devices_equal_one(x64):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["n_devices"] == 4
    x = np.random.default_rng(0).normal(size=(1500, 3))
    import jax
    import jax.numpy as jnp

    diff = PositionDependent(lambda p: jnp.eye(3) * (1.0 + 0.1 * jnp.tanh(p @ p)))
    here = {
        "identity": ksd_squared(x, -x, kernel=IMQ(bandwidth="med"), block_size=64),
        "position": ksd_squared(x, -x, kernel=IMQ(bandwidth="med"), block_size=64, diffusion=diff),
    }
    from numpyro_dsd.mcmc.bootstrap import sign_process, wild_bootstrap
    from numpyro_dsd.stein.engine import prepare

    sk = prepare(x, -x, kernel=IMQ(bandwidth="med").frozen(x))
    signs = sign_process(jax.random.key(1), 1500, 50, 0.01)
    here["jumps"] = wild_bootstrap(sk, signs, block_size=64, method="dense").replicates
    here["nystrom"] = ksd_squared(
        x, -x, kernel=IMQ(bandwidth="med"), block_size=64, estimator="nystrom", num_inducing=100
    )
    for name, value in here.items():
        np.testing.assert_allclose(out[name], value, rtol=1e-12)
        np.testing.assert_allclose(out[name + "_one"], value, rtol=1e-12)


SVGD_SCRIPT = textwrap.dedent(
    """
    import json
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp, numpy as np, numpyro, numpyro.distributions as dist, optax
    from numpyro_dsd import SVGD
    def model():
        scale = jnp.array([1.0, 0.1, 2.0])
        numpyro.sample("x", dist.Normal(jnp.arange(3.0), scale).to_event(1))
    out = {"n_devices": len(jax.local_devices())}
    for name, devs in {"all": None, "one": jax.local_devices()[:1]}.items():
        svgd = SVGD(model, optax.adagrad(0.3), num_particles=8, preconditioner="constant",
                    devices=devs)
        r = svgd.run(jax.random.key(0), 30, progress_bar=False)
        out[name] = np.asarray(r.particles).tolist()
        out[name + "_devices"] = len(r.state.particles.sharding.device_set)
    print(json.dumps(out))
    """
)


def test_svgd_particles_split_over_four_devices():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    run = subprocess.run(
        [sys.executable, "-c", SVGD_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert (out["n_devices"], out["all_devices"], out["one_devices"]) == (4, 4, 1)
    np.testing.assert_allclose(out["all"], out["one"], rtol=1e-12, atol=1e-12)
