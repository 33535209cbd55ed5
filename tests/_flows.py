"""A nonlinear flow with an analytic inverse, for the flow-identity tests (docs/math.md §7,
oracle 7).

:math:`T = C_2 \\circ L \\circ C_1`: an affine coupling layer, a dense linear map and a second
coupling layer (the other half conditioned). It follows the
:class:`numpyro_dsd.flows.bijections.Bijection` protocol, one point at a time, with the
log-determinant in closed form.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _mlp(key: jax.Array, d_in: int, d_out: int, width: int = 8) -> tuple[jax.Array, ...]:
    k1, k2, k3 = jax.random.split(key, 3)
    w1 = jax.random.normal(k1, (d_in, width)) / jnp.sqrt(d_in)
    b1 = 0.3 * jax.random.normal(k2, (width,))
    w2 = 0.4 * jax.random.normal(k3, (width, 2 * d_out)) / jnp.sqrt(width)
    return w1, b1, w2


def _shift_log_scale(params: tuple[jax.Array, ...], u: jax.Array) -> tuple[jax.Array, jax.Array]:
    w1, b1, w2 = params
    h = jnp.tanh(u @ w1 + b1) @ w2
    shift, log_scale = jnp.split(h, 2)
    return shift, jnp.tanh(log_scale)


class CouplingFlow:
    """:math:`z = T(x)` for points of dimension ``d >= 2`` (data to latent)."""

    def __init__(self, d: int, key: jax.Array | int = 0):
        key = jax.random.key(key) if isinstance(key, int) else key
        k1, k2, k3, k4 = jax.random.split(key, 4)
        self.d, self.h = d, d // 2
        self.c1 = _mlp(k1, self.h, d - self.h)
        self.c2 = _mlp(k2, d - self.h, self.h)
        q, _ = jnp.linalg.qr(jax.random.normal(k3, (d, d)))
        self.W = q * jnp.exp(jnp.linspace(-0.5, 0.5, d))[None, :]  # cond = e
        self.c = jax.random.normal(k4, (d,))

    def transform_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        a, b = x[: self.h], x[self.h :]
        t, s = _shift_log_scale(self.c1, a)
        y = jnp.concatenate([a, b * jnp.exp(s) + t])
        y = self.W @ y + self.c
        a, b = y[: self.h], y[self.h :]
        t2, s2 = _shift_log_scale(self.c2, b)
        z = jnp.concatenate([a * jnp.exp(s2) + t2, b])
        return z, jnp.sum(s) + jnp.linalg.slogdet(self.W)[1] + jnp.sum(s2)

    def inverse_and_log_det(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        a, b = z[: self.h], z[self.h :]
        t2, s2 = _shift_log_scale(self.c2, b)
        y = jnp.concatenate([(a - t2) * jnp.exp(-s2), b])
        y = jnp.linalg.solve(self.W, y - self.c)
        a, b = y[: self.h], y[self.h :]
        t, s = _shift_log_scale(self.c1, a)
        x = jnp.concatenate([a, (b - t) * jnp.exp(-s)])
        return x, -(jnp.sum(s) + jnp.linalg.slogdet(self.W)[1] + jnp.sum(s2))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.transform_and_log_det(x)[0]

    def inv(self, z: jax.Array) -> jax.Array:
        return self.inverse_and_log_det(z)[0]
