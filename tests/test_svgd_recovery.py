"""Recovering an SVGD run (issue 17, items 5-7): the state a stopped run keeps can be resumed
with a smaller step, a Ctrl-C keeps the run up to its last completed chunk, and a resumed state
is checked against the object. The recovery recipe of docs/svgd.md runs here."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest

from conftest import float64
from numpyro_dsd import SVGD, NonFiniteStepError, SVGDInterrupted

#: Plain deterministic SVGD in the unconstrained space: the loop's machinery, fast.
PLAIN = {"preconditioner": None, "noise_step": None, "linear_weight": 0.0}
DOCS = Path(__file__).resolve().parents[1] / "docs" / "svgd.md"


def wall():
    """Finite log density right of x[0] = -3 only: a large step lands particles left of the
    wall, where the particles are finite but their scores are not (NaN)."""
    x = numpyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    numpyro.factor("wall", jnp.sqrt(x[0] + 3.0))


def gaussian(d=2):
    numpyro.sample("x", dist.Normal(0.0, 1.0).expand([d]).to_event(1))


def _scores(svgd: SVGD, state) -> np.ndarray:
    return np.asarray(jax.vmap(jax.grad(svgd._ready().log_prob))(svgd.get_particles(state)))


def _stopped(svgd: SVGD, num_steps: int = 50) -> NonFiniteStepError:
    with pytest.raises(NonFiniteStepError) as err:
        svgd.run(jax.random.key(0), num_steps, progress_bar=False)
    return err.value


# ---- item 5: the kept state is one a smaller step can continue from ----------------------------


def test_non_finite_keeps_a_state_a_smaller_step_continues_from():
    """sgd(5.0) lands a particle behind the wall (finite, NaN score). The state kept is the one
    before that step: particles and scores finite, so the same run with a 1000x smaller step
    continues from it to a finite result (it stopped again at step 0 before)."""
    svgd = SVGD(wall, optax.sgd(5.0), num_particles=6, init_radius=1.0, chunk_size=4, **PLAIN)
    err = _stopped(svgd)
    kept = err.result.state
    assert np.all(np.isfinite(err.result.particles)) and np.all(np.isfinite(_scores(svgd, kept)))
    steps = int(kept.step)
    assert err.result.ksd_squared.shape == err.result.stein_force.shape == (steps,)
    assert np.all(np.asarray(err.result.ksd_step) <= steps)
    assert np.all(np.isfinite(err.result.ksd))
    smaller = SVGD(wall, optax.sgd(5e-3), num_particles=6, chunk_size=4, **PLAIN)
    rest = smaller.run(jax.random.key(0), 100, progress_bar=False, init_state=kept)
    assert int(rest.state.step) == steps + 100
    assert np.all(np.isfinite(rest.particles)) and np.all(np.isfinite(rest.ksd_squared))


def test_noisy_chain_resumes_with_a_smaller_noise_step():
    """The same for noisy SVGD (the default's chain): noise_step=5 crosses the wall, and the
    chain continues from the state kept with a 1000x smaller noise_step."""
    noisy = {"preconditioner": None, "num_particles": 10, "chunk_size": 10}
    err = _stopped(SVGD(wall, None, noise_step=5.0, **noisy))
    kept = err.result.state
    rest = SVGD(wall, None, noise_step=5e-3, **noisy).run(
        jax.random.key(0), 100, progress_bar=False, init_state=kept
    )
    assert int(rest.state.step) == int(kept.step) + 100 and np.all(np.isfinite(rest.particles))


def test_non_finite_optimizer_state_is_not_kept():
    """Scores near 1e20: adagrad's sum of squared gradients overflows float32 to inf while the
    particles stay finite (its update is then 0, forever). That step is not taken: the run
    stops with NonFiniteStepError and the state it keeps has a finite optimizer state (before,
    the run ended silently with the particles frozen and the state at inf)."""

    def narrow():
        numpyro.sample("x", dist.Normal(0.0, 1e-10).expand([2]).to_event(1))

    svgd = SVGD(narrow, optax.adagrad(0.1), num_particles=6, chunk_size=5, **PLAIN)
    err = _stopped(svgd, 10)
    leaves = jax.tree.leaves(err.result.state.opt_state)
    assert leaves and all(np.all(np.isfinite(leaf)) for leaf in leaves)
    assert "optimizer state" in str(err)


def test_resume_with_another_optimizer_reinitialises_its_state():
    """A state from adagrad in an object with adam: the optimizer state is re-initialised from
    the particles, with a UserWarning saying so (it was a raw AttributeError); a state of the
    same optimizer with a smaller step keeps its statistics, without a warning."""
    ada = SVGD(gaussian, optax.adagrad(0.5), num_particles=8, chunk_size=5, **PLAIN)
    first = ada.run(jax.random.key(0), 10, progress_bar=False)
    adam = SVGD(gaussian, optax.adam(0.05), num_particles=8, chunk_size=5, **PLAIN)
    with pytest.warns(UserWarning, match="re-initialised"):
        rest = adam.run(jax.random.key(0), 10, progress_bar=False, init_state=first.state)
    assert int(rest.state.step) == 20 and np.all(np.isfinite(rest.particles))
    with pytest.warns(UserWarning, match="re-initialised"):
        state, info = adam.update(first.state)
    assert bool(info.finite)
    small = SVGD(gaussian, optax.adagrad(5e-4), num_particles=8, chunk_size=5, **PLAIN)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small.run(jax.random.key(0), 5, progress_bar=False, init_state=first.state)


# ---- item 6: Ctrl-C keeps the run up to its last completed chunk -------------------------------


def _interrupt_at(svgd: SVGD, name: str, call: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the object's own jitted ``name`` raise KeyboardInterrupt on its ``call``-th call,
    as a Ctrl-C during that chunk would."""
    inner, calls = getattr(svgd, name), []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return inner(*args, **kwargs)

    monkeypatch.setattr(svgd, name, interrupted)


def test_keyboard_interrupt_keeps_the_last_completed_chunk(monkeypatch):
    """Ctrl-C in the third chunk: SVGDInterrupted (a KeyboardInterrupt) carries the run up to
    the second, and resuming from it gives exactly the uninterrupted run."""
    svgd = SVGD(gaussian, optax.adagrad(0.5), num_particles=8, chunk_size=10, **PLAIN)
    whole = svgd.run(jax.random.key(0), 50, progress_bar=False)
    _interrupt_at(svgd, "_scan", 3, monkeypatch)
    with pytest.raises(KeyboardInterrupt, match="init_state=err.result.state") as err:
        svgd.run(jax.random.key(0), 50, progress_bar=False)
    assert isinstance(err.value, SVGDInterrupted)
    part = err.value.result
    assert int(part.state.step) == 20 and part.ksd_squared.shape == (20,)
    np.testing.assert_array_equal(part.ksd_step, [0, 10, 20])
    monkeypatch.undo()
    rest = svgd.run(jax.random.key(0), 30, progress_bar=False, init_state=part.state)
    np.testing.assert_array_equal(rest.particles, whole.particles)
    np.testing.assert_array_equal(
        jnp.concatenate([part.ksd_squared, rest.ksd_squared]), whole.ksd_squared
    )


def test_keyboard_interrupt_in_the_finish_keeps_the_chain(monkeypatch):
    """Ctrl-C during the finish: the whole chain is kept (its particles unfinished)."""
    svgd = SVGD(gaussian, optax.adagrad(0.1), num_particles=8, chunk_size=10,
                preconditioner=None, finish_steps=5)  # fmt: skip
    _interrupt_at(svgd, "_finish", 1, monkeypatch)
    with pytest.raises(SVGDInterrupted) as err:
        svgd.run(jax.random.key(0), 20, progress_bar=False)
    part = err.value.result
    assert int(part.state.step) == 20 and part.finish_ksd is None
    np.testing.assert_array_equal(part.particles, svgd.get_particles(part.state))


# ---- item 7: a resumed state is checked against the object -------------------------------------


def test_state_is_checked_against_the_object():
    """A 20-particle state in a num_particles=10 object (it ran 20 particles silently), a state
    of another dimension (a raw XLA error) and one of another precision (a raw TypeError from
    lax.cond) each raise a ValueError naming the mismatch and the fix; so does update()."""
    twenty = SVGD(gaussian, optax.sgd(0.1), num_particles=20, **PLAIN).init(jax.random.key(0))
    ten = SVGD(gaussian, optax.sgd(0.1), num_particles=10, **PLAIN)
    with pytest.raises(ValueError, match=r"20 particles.*num_particles=10.*num_particles=20"):
        ten.run(jax.random.key(0), 3, progress_bar=False, init_state=twenty)
    with pytest.raises(ValueError, match=r"state has 20 particles"):
        ten.update(twenty)
    three = SVGD(gaussian, optax.sgd(0.1), num_particles=20, **PLAIN)
    with pytest.raises(ValueError, match=r"2 coordinates.*d = 3.*model arguments"):
        three.run(jax.random.key(0), 3, 3, progress_bar=False, init_state=twenty)
    with float64():
        wide = SVGD(gaussian, optax.sgd(0.1), num_particles=20, **PLAIN).init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"float64.*float32.*jax_enable_x64"):
        SVGD(gaussian, optax.sgd(0.1), num_particles=20, **PLAIN).run(
            jax.random.key(0), 3, progress_bar=False, init_state=wide
        )
    with pytest.raises(TypeError, match="init_state must be an SVGDState"):
        ten.run(jax.random.key(0), 3, progress_bar=False, init_state=twenty.particles)


# ---- the docs' recipe ---------------------------------------------------------------------------


def _docs_recipe() -> str:
    """The first python block of docs/svgd.md's section on recovering a run."""
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("### When a run stops") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_docs_recovery_recipe_runs_to_a_finite_result():
    """The recipe stops with NonFiniteStepError, resumes with a smaller step and ends finite
    (more steps than the first run asked for: it went through the except branch)."""
    namespace: dict = {}
    exec(compile(_docs_recipe(), str(DOCS), "exec"), namespace)
    result, samples = namespace["result"], namespace["samples"]
    assert int(result.state.step) > 200
    assert np.all(np.isfinite(result.particles)) and np.all(np.isfinite(samples["x"]))
