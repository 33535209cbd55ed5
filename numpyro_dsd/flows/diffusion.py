"""The flow diffusion :math:`M(x) = J(x)^{-1}` of a normalizing flow (docs/math.md §3).

A :class:`~numpyro_dsd.stein.diffusion.Diffusion` whose features are the latent points and
latent scores, so its diffusion KSD is the plain KSD in the flow's latent space (Theorem 3.5).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_dsd._validation import check_finite, is_concrete
from numpyro_dsd.flows.bijections import (
    NotInvertibleError,
    as_bijection,
    check_flow_dim,
    inverse,
    latent_score,
)
from numpyro_dsd.stein.diffusion import DiffusionFeatures

__all__ = ["FlowDiffusion"]


class FlowDiffusion:
    """Flow diffusion :math:`M(x) = J(x)^{-1}`, :math:`J = \\partial z/\\partial x`, with the
    kernel :math:`k_z(T(x), T(y))` (docs/math.md §3).

    By Theorem 3.5 this diffusion KSD equals the plain (Langevin) KSD of the latent points
    :math:`z_i = T(x_i)` against the pushed-forward target :math:`T_\\#p`, whose score is
    (Lemma 3.1)

    .. math:: s_{T_\\#p}(T(x)) = J(x)^{-\\top}\\big(s_p(x) - \\nabla_x\\log|\\det J(x)|\\big)
        = \\nabla G(z)^\\top s_p(x) + \\nabla_z \\log|\\det\\nabla G(z)|,\\quad z = T(x).

    So the features are computed the cheap way (docs/math.md §3.8): map each point to latent space,
    form its latent score, and apply the plain Stein kernel there, :math:`O(n^2 d)` for the pairs.
    The kernel's bandwidth (e.g. ``"med"``) is estimated on the latent points.

    ``FlowDiffusion(T)`` takes the data-to-latent map :math:`T` and uses the right-hand form
    with :math:`J` from ``jax.jacfwd`` and a linear solve (:math:`O(d^3)` per point; no inverse
    needed, so a BNAF works). ``FlowDiffusion.from_generator(G)`` takes the latent-to-data map
    :math:`G = T^{-1}` (e.g. ``guide.get_transform(params)`` of a fitted ``AutoIAFNormal``),
    computes :math:`z = G^{-1}(x)` and the second form with one vector-Jacobian product of
    :math:`G`; it checks :math:`G(z) = x` to catch flows that are not invertible there.

    Parameters
    ----------
    T : NumPyro ``Transform`` or bijection
        Data to latent, acting on (d,) points. Any object with ``transform_and_log_det`` and
        ``inverse_and_log_det`` (a flowjax bijection, :class:`numpyro_dsd.flows.bijections.Inverse`,
        :class:`numpyro_dsd.ContinuousFlow`) is accepted.
    batch_size : int, optional
        Points mapped at once (vectorised) in the sequential loop over the points; default
        :math:`2^{22}/d^2` (the per-point Jacobians of a batch take 4M numbers), at least 256.
        Small batches are slow on CPU: at n = 20,000, d = 10, batches of 256 took 1.27 s, one
        batch 0.02 s.
    record : mapping, optional
        How the flow was made (e.g. ``FlowFit.summary()``: steps, :math:`\\hat k`); reported by
        :meth:`settings` as ``flow_<key>`` entries, so a diagnostic's attributes say which flow
        it used and how good it was.

    Examples
    --------
    An affine flow :math:`T(x) = Ax` is the constant diffusion :math:`M = A^{-1}`
    (docs/math.md §3.7):

    >>> import jax.numpy as jnp
    >>> from numpyro.distributions.transforms import AffineTransform
    >>> from numpyro_dsd import FlowDiffusion, ksd
    >>> x = jnp.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
    >>> flow = FlowDiffusion(AffineTransform(0.0, jnp.array([2.0, 0.5])))
    >>> float(ksd(x, -x, diffusion=flow)) > 0
    True
    """

    def __init__(
        self, T: object, *, batch_size: int | None = None, record: Mapping[str, Any] | None = None
    ):
        self.bijection = as_bijection(T)
        self.batch_size = batch_size
        self.record = dict(record or {})
        self.method = "jacobian"
        self._latent = self._compile()

    @classmethod
    def from_generator(
        cls, G: object, *, batch_size: int | None = None, record: Mapping[str, Any] | None = None
    ) -> FlowDiffusion:
        """The flow diffusion of :math:`T = G^{-1}`, for a generator :math:`G` (latent to data).

        Examples
        --------
        >>> import jax.numpy as jnp
        >>> from numpyro.distributions.transforms import AffineTransform
        >>> G = AffineTransform(1.0, 3.0)
        >>> flow = FlowDiffusion.from_generator(G)
        >>> z, s_z = flow.latent(jnp.array([[4.0]]), jnp.array([[-1.0]]))
        >>> z, s_z
        (Array([[1.]], dtype=float32), Array([[-3.]], dtype=float32))
        """
        self = cls(inverse(G), batch_size=batch_size, record=record)
        self.method = "generator"
        self._latent = self._compile()
        return self

    def __reduce__(self) -> tuple[Callable, tuple]:
        """Pickle the flow and the settings, never the compiled map (rebuilt on unpickling). A
        fitted flow's diffusion (``FittedFlow.diffusion``) is rebuilt from its ``FittedFlow``, whose
        plain arrays pickle where the flow's transforms (closures over its networks) do not."""
        fitted = self.__dict__.get("fitted")
        if fitted is not None:
            return _from_fitted, (fitted, self.record, self.batch_size)
        state = {k: v for k, v in self.__dict__.items() if k != "_latent"}
        return _from_state, (type(self), state)

    def _compile(self) -> Callable:
        """The jitted map of all points, by :attr:`method` (``_latent_by_<method>`` per point)."""
        point_fn = getattr(self, f"_latent_by_{self.method}")

        def run(x: jax.Array, s: jax.Array) -> tuple[jax.Array, ...]:
            n, d = x.shape
            batch = self.batch_size or max(256, 2**22 // (d * d))
            if batch >= n:
                return jax.vmap(point_fn)(x, s)
            return jax.lax.map(lambda a: point_fn(*a), (x, s), batch_size=batch)

        return jax.jit(run)

    def _latent_by_jacobian(self, x: jax.Array, s: jax.Array) -> tuple[jax.Array, ...]:
        """:math:`J^{-\\top}(s - \\nabla\\log|\\det J|)`; both derivatives from one ``jacfwd``."""
        fwd = self.bijection.transform_and_log_det
        (J, grad_logdet), (z, _) = jax.jacfwd(lambda p: (fwd(p), fwd(p)), has_aux=True)(x)
        s_z = jnp.linalg.solve(J.T, s - grad_logdet)
        return z.astype(x.dtype), s_z.astype(x.dtype), jnp.zeros((), x.dtype)

    def _latent_by_generator(self, x: jax.Array, s: jax.Array) -> tuple[jax.Array, ...]:
        """:math:`\\nabla G(z)^\\top s + \\nabla_z\\log|\\det\\nabla G(z)|` by one VJP of G."""
        z, _ = self.bijection.transform_and_log_det(x)
        x_back, s_z = latent_score(self.bijection, z, lambda _: s)
        round_trip = jnp.max(jnp.abs(x_back - x) / (1.0 + jnp.abs(x)))
        return z.astype(x.dtype), s_z.astype(x.dtype), round_trip.astype(x.dtype)

    def latent(self, x: jax.Array, scores: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Latent points :math:`z_i = T(x_i)` (n, d) and scores :math:`s_{T_\\#p}(z_i)` (n, d)."""
        check_flow_dim(self.bijection, x.shape[1], x.dtype)
        z, s_z, round_trip = self._latent(x, scores)
        check_finite(z, "The flow's latent points T(x)", "Check the flow at those draws.")
        check_finite(
            s_z,
            "The latent score J^{-T}(s - grad log|det J|)",
            "The flow's Jacobian is singular or not finite there; refit the flow or drop "
            "those draws.",
        )
        self._check_round_trip(round_trip)
        return z, s_z

    def _check_round_trip(self, round_trip: jax.Array) -> None:
        if not is_concrete(round_trip):
            return
        err = np.asarray(round_trip)
        tol = 10.0 * float(np.sqrt(np.finfo(err.dtype).eps))
        if err.max() > tol:
            raise NotInvertibleError(
                f"The flow is not invertible at {int((err > tol).sum())} of {err.size} draws: "
                f"G(G^-1(x)) differs from x by up to {err.max():.2g} (relative; first at row "
                f"{int(np.argmax(err > tol))}). The generator's inverse is inexact there (e.g. "
                "IAF log-scale clipping, or draws outside the flow's range); refit the flow or "
                "use FlowDiffusion(T) with the data-to-latent map."
            )

    def features(self, x: jax.Array, scores: jax.Array) -> DiffusionFeatures:
        """Return ``(z, s_z, None)``: the plain Stein kernel in latent space (Theorem 3.5)."""
        z, s_z = self.latent(x, scores)
        return DiffusionFeatures(z, s_z, None)

    def settings(self) -> dict[str, object]:
        """Plain-value description for result attributes, with ``record`` as ``flow_<key>``."""
        flow = {"diffusion": f"FlowDiffusion({self.bijection!r}, method={self.method!r})"}
        return {**flow, **{f"flow_{k}": v for k, v in self.record.items()}}

    def __repr__(self) -> str:
        return f"FlowDiffusion({self.bijection!r})"


def _from_state(cls: type[FlowDiffusion], state: dict[str, Any]) -> FlowDiffusion:
    """Unpickle a :class:`FlowDiffusion`: its attributes, then the compiled map."""
    diffusion = cls.__new__(cls)
    diffusion.__dict__.update(state)
    diffusion._latent = diffusion._compile()
    return diffusion


def _from_fitted(fitted: Any, record: dict[str, Any], batch_size: int | None) -> FlowDiffusion:
    """Unpickle a fitted flow's :class:`FlowDiffusion` from the fitted flow."""
    diffusion = fitted.diffusion(record)
    diffusion.batch_size = batch_size
    return diffusion
