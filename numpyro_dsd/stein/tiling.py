"""Blocked, sharded evaluation of weighted sums over all pairs of a symmetric pair function.

The pair matrix :math:`K_{ij} = \\kappa(f_i, f_j)` is never formed. Points are padded to a
multiple of the block size B and cut into blocks; only the tiles :math:`(I, J)` with
:math:`I \\le J` are visited (half the pairs), each costing :math:`O(B^2)` memory:

.. math::
    \\sum_{ij} w_i w_j K_{ij}
    = \\sum_{I} w_I^\\top K_{II} w_I + 2\\sum_{I<J} w_I^\\top K_{IJ} w_J .

The same tiles give :math:`K W` for a block of vectors :math:`W` (n, k) (:func:`pair_matvec`:
the wild bootstrap) and the strictly lower products :math:`\\sum_{j<i} K_{ij} W_j` (prefix
curves along a chain), each tile :math:`K_{IJ}` serving both :math:`I` and :math:`J`.

The tile list is split over the given devices with :func:`jax.shard_map` (a 1-D mesh named
``"tiles"``); each device scans its tiles with :func:`jax.lax.scan` and the partial sums are
combined with ``psum``, so one device and many give the same value up to rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

__all__ = ["pad_blocks", "map_row_blocks", "tile_list", "weighted_pair_sum", "pair_matvec"]

TileFn = Callable[..., jax.Array]


def pad_blocks(tree: object, n: int, block: int) -> object:
    """Zero-pad every leaf's leading axis from n to a multiple of ``block`` and reshape it to
    ``(n_blocks, block, ...)``."""
    nb = -(-n // block)

    def one(a: jax.Array) -> jax.Array:
        a = jnp.pad(a, [(0, nb * block - n)] + [(0, 0)] * (a.ndim - 1))
        return a.reshape(nb, block, *a.shape[1:])

    return jax.tree_util.tree_map(one, tree)


def map_row_blocks(fn: Callable[[object], object], rows: object, n: int, block: int) -> object:
    """``fn`` over the rows of ``rows`` in blocks of ``block``: :math:`O(B\\,n)` memory when
    ``fn`` pairs a block of B rows with all n points.

    Parameters
    ----------
    fn : callable
        Pytree of ``(B, ...)`` row leaves to a pytree of ``(B, ...)`` per-row outputs; rows are
        independent (padding rows are zeros and their outputs are dropped).
    rows : pytree of arrays with leading axis n
        Per-row inputs.
    n : int
        Rows.
    block : int
        Rows per call; ``n <= block`` is one call, without padding or a loop.

    Returns
    -------
    Pytree of ``(n, ...)`` arrays: ``fn``'s outputs, rows in order.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> map_row_blocks(lambda r: 2 * r, jnp.arange(5.0), 5, 2)
    Array([0., 2., 4., 6., 8.], dtype=float32)
    """
    if n <= block:
        return fn(rows)
    out = jax.lax.map(fn, pad_blocks(rows, n, block))
    return jax.tree_util.tree_map(lambda a: a.reshape(-1, *a.shape[2:])[:n], out)


def tile_list(n_blocks: int, n_devices: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Upper-triangular tiles ``(I, J, factor)``, padded with zero-factor tiles to a multiple of
    ``n_devices``; ``factor`` is 1 on the diagonal and 2 above it."""
    rows, cols = np.triu_indices(n_blocks)
    factor = np.where(rows == cols, 1, 2)
    pad = -len(rows) % n_devices
    zeros = np.zeros(pad, dtype=rows.dtype)
    return (
        np.concatenate([rows, zeros]).astype(np.int32),
        np.concatenate([cols, zeros]).astype(np.int32),
        np.concatenate([factor, zeros]).astype(np.int32),
    )


@partial(jax.jit, static_argnames=("tile_fn", "block", "devices"))
def weighted_pair_sum(
    tile_fn: TileFn,
    feats: object,
    consts: object,
    diag: jax.Array,
    weights: jax.Array,
    *,
    block: int,
    devices: Sequence[jax.Device],
) -> jax.Array:
    """:math:`\\sum_{i,j} w_i w_j K_{ij}` with :math:`K_{ii}` taken from ``diag``.

    Parameters
    ----------
    tile_fn : callable
        ``tile_fn(feats_I, feats_J, consts) -> (B, B)`` block of the pair function (hashable:
        it is a static argument).
    feats : pytree of arrays with leading axis n
        Per-point features.
    consts : pytree
        Arrays shared by all pairs, passed to every ``tile_fn`` call.
    diag : (n,)
        Exact :math:`K_{ii}` (the tile function's value on the diagonal is replaced by it, so
        rounding in a distance computed as :math:`|x|^2 + |y|^2 - 2x\\cdot y` cannot leak in).
    weights : (n,)
        :math:`w`; zero weight makes a point inert.
    block : int
        Tile size B.
    devices : tuple of devices
        Devices to shard the tiles over.

    Returns
    -------
    Scalar of the features' dtype.
    """
    n = weights.shape[0]
    fb, db, wb = pad_blocks((feats, diag, weights), n, block)

    def local(rows: jax.Array, cols: jax.Array, factor: jax.Array, fb, consts, db, wb) -> jax.Array:
        def body(acc: jax.Array, tile: tuple[jax.Array, ...]) -> tuple[jax.Array, None]:
            i, j, f = tile
            k = _tile(tile_fn, fb, consts, db, i, j)
            return acc + f.astype(acc.dtype) * (wb[i] @ k @ wb[j]), None

        total, _ = jax.lax.scan(body, jnp.zeros((), wb.dtype), (rows, cols, factor))
        return jax.lax.psum(total, "tiles")

    return _over_tiles(local, fb, consts, db, wb, devices)


def _tile(tile_fn: TileFn, fb: object, consts: object, db: jax.Array, i: jax.Array, j: jax.Array):
    """Tile (I, J) of the pair matrix, with the exact diagonal on a diagonal tile."""
    fi = jax.tree_util.tree_map(lambda a: a[i], fb)
    fj = jax.tree_util.tree_map(lambda a: a[j], fb)
    eye = jnp.eye(db.shape[1], dtype=bool)
    return jnp.where(eye & (i == j), db[i][:, None], tile_fn(fi, fj, consts))


def _over_tiles(local: Callable, fb, consts, db: jax.Array, wb: jax.Array, devices) -> jax.Array:
    """Run ``local(rows, cols, factor, fb, consts, db, wb)`` on each device's share of the upper
    tiles (1-D mesh ``"tiles"``); ``local`` combines its result with ``psum``."""
    rows, cols, factor = tile_list(wb.shape[0], len(devices))
    mesh = Mesh(np.asarray(devices), ("tiles",))
    tiles, rep = PartitionSpec("tiles"), PartitionSpec()
    sharded = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(tiles, tiles, tiles, rep, rep, rep, rep),
        out_specs=rep,
        check_vma=False,
    )
    return sharded(jnp.asarray(rows), jnp.asarray(cols), jnp.asarray(factor), fb, consts, db, wb)


@partial(jax.jit, static_argnames=("tile_fn", "block", "devices", "lower"))
def pair_matvec(
    tile_fn: TileFn,
    feats: object,
    consts: object,
    diag: jax.Array,
    w: jax.Array,
    *,
    block: int,
    devices: Sequence[jax.Device],
    lower: bool = False,
) -> jax.Array:
    """:math:`K W` (``lower=False``) or :math:`\\big(\\sum_{j<i} K_{ij} W_{jc}\\big)_{ic}`
    (``lower=True``) for ``w`` of shape (n, k), without forming K.

    Each upper tile :math:`(I, J)` adds :math:`K_{IJ} W_J` to rows I and :math:`K_{IJ}^\\top W_I`
    to rows J (full product), or only the latter, with the diagonal tile masked to its strictly
    lower part (``lower``). Cost :math:`O(n^2 (d + k))`, memory :math:`O(B^2 + n k)`. Same
    ``tile_fn``/``feats``/``consts``/``diag``/``block``/``devices`` as
    :func:`weighted_pair_sum`.

    Returns
    -------
    (n, k) array in ``w``'s dtype.
    """
    n, k = w.shape
    fb, db, wb = pad_blocks((feats, diag, w), n, block)
    strict_upper = jnp.triu(jnp.ones((block, block), dtype=w.dtype), 1)

    def local(rows: jax.Array, cols: jax.Array, factor: jax.Array, fb, consts, db, wb) -> jax.Array:
        def body(out: jax.Array, tile: tuple[jax.Array, ...]) -> tuple[jax.Array, None]:
            i, j, f = tile
            kij, same = _tile(tile_fn, fb, consts, db, i, j), i == j
            live = (f > 0).astype(w.dtype)
            if lower:  # rows of J take K_IJ^T W_I; a diagonal tile only its strictly lower part
                kij = jnp.where(same, kij * strict_upper, kij)
                return out.at[j].add(live * (kij.T @ wb[i])), None
            out = out.at[i].add(live * (kij @ wb[j]))
            return out.at[j].add(live * jnp.where(same, 0.0, 1.0) * (kij.T @ wb[i])), None

        out, _ = jax.lax.scan(body, jnp.zeros_like(wb), (rows, cols, factor))
        return jax.lax.psum(out, "tiles")

    return _over_tiles(local, fb, consts, db, wb, devices).reshape(-1, k)[:n]
