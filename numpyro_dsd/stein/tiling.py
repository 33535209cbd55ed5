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

The devices may belong to several processes (multi-controller JAX, ``jax.distributed``;
docs/scale.md): every process passes the same inputs (its own full copy) and the same global
device list, each device scans its share of the tiles, and every process gets the same
replicated result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

__all__ = [
    "pad_blocks",
    "map_row_blocks",
    "tile_list",
    "weighted_pair_sum",
    "pair_matvec",
    "pair_quadratic_jumps",
    "sign_jumps",
    "SignJumps",
]

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


class SignJumps(NamedTuple):
    """The jumps of sign columns w (n, k) and their pairs, grouped by row block
    (:func:`sign_jumps`; the input of :func:`pair_quadratic_jumps`).

    Attributes
    ----------
    rows, cols, vals : (J,)
        Every nonzero :math:`\\Delta_{jc} = w_{jc} - w_{j-1,c}` (:math:`w_{-1} = 0`).
    pair_local, pair_other, pair_col : (n_blocks, P)
        For each row block, the pairs of jumps (j, j') of one column c with j in the block: j's
        row within the block, j' and c.
    pair_weight : (n_blocks, P)
        :math:`\\Delta_{jc}\\Delta_{j'c}` (0 on padding).
    block_jumps : (n_blocks, k)
        :math:`\\sum_{j \\in I} \\Delta_{jc}` per row block I.
    """

    rows: np.ndarray
    cols: np.ndarray
    vals: np.ndarray
    pair_local: np.ndarray
    pair_other: np.ndarray
    pair_col: np.ndarray
    pair_weight: np.ndarray
    block_jumps: np.ndarray

    @property
    def num_pairs(self) -> int:
        return int(np.count_nonzero(self.pair_weight))


def _padded_length(count: int) -> int:
    """``count`` rounded up to one of a few lengths per octave (at most 1/8 more), so that
    inputs of similar size share one compiled function."""
    step = 1 << max(0, count.bit_length() - 4)
    return max(1, -(-count // step) * step)


def sign_jumps(w: np.ndarray, block: int) -> SignJumps:
    """The jumps of sign columns w (n, k) and the pairs of jumps of each column, grouped by
    row block of size ``block`` (:class:`SignJumps`); host-side, :math:`O(n k + \\sum_c m_c^2)`
    for :math:`m_c` jumps in column c.

    Examples
    --------
    >>> w = np.array([[1, 1], [1, -1], [-1, -1]], dtype=np.int8)
    >>> jumps = sign_jumps(w, block=2)
    >>> [(int(r), int(c), int(v)) for r, c, v in zip(jumps.rows, jumps.cols, jumps.vals)]
    [(0, 0, 1), (2, 0, -2), (0, 1, 1), (1, 1, -2)]
    >>> jumps.num_pairs  # 2 jumps in each column: 4 ordered pairs each
    8
    """
    w = np.asarray(w, dtype=np.int8)
    n, k = w.shape
    delta = np.diff(w, axis=0, prepend=np.zeros((1, k), np.int8))
    cols, rows = np.nonzero(delta.T)  # grouped by column, rows ascending
    vals = delta[rows, cols]
    counts = np.bincount(cols, minlength=k)
    starts = np.cumsum(counts) - counts
    per_jump = counts[cols]
    first = np.repeat(np.arange(rows.size), per_jump)
    offset = np.arange(first.size) - np.repeat(np.cumsum(per_jump) - per_jump, per_jump)
    second = starts[cols[first]] + offset
    nb = -(-n // block)
    blk = rows[first] // block
    order = np.argsort(blk, kind="stable")
    first, second, blk = first[order], second[order], blk[order]
    per_block = np.bincount(blk, minlength=nb)
    size = _padded_length(int(per_block.max(initial=0)))
    slot = np.arange(blk.size) - np.repeat(np.cumsum(per_block) - per_block, per_block)
    grids = [np.zeros((nb, size), dt) for dt in (np.int32, np.int32, np.int32, np.int8)]
    for grid, value in zip(
        grids,
        (rows[first] % block, rows[second], cols[first], vals[first] * vals[second]),
        strict=True,
    ):
        grid[blk, slot] = value
    block_jumps = np.zeros((nb, k), np.int32)
    np.add.at(block_jumps, (rows // block, cols), vals)
    return SignJumps(rows.astype(np.int32), cols.astype(np.int32), vals, *grids, block_jumps)


@partial(jax.jit, static_argnames=("tile_fn", "block", "devices"))
def pair_quadratic_jumps(
    tile_fn: TileFn,
    feats: object,
    consts: object,
    diag: jax.Array,
    jumps: SignJumps,
    *,
    block: int,
    devices: Sequence[jax.Device],
) -> jax.Array:
    """:math:`(w_c^\\top K w_c)_c` for sign columns that rarely change along the rows, from
    their jumps alone (:func:`sign_jumps`): :math:`O(n^2 d + \\sum_c m_c^2)` instead of
    :math:`O(n^2 k)`.

    With :math:`\\Delta_{jc} = w_{jc} - w_{j-1,c}`, :math:`w_c = L\\Delta_c` for the
    lower-triangular matrix of ones L, so

    .. math:: w_c^\\top K w_c = \\sum_{j, j'} \\Delta_{jc}\\Delta_{j'c}\\, P_{jj'}, \\qquad
              P_{jj'} = \\sum_{i \\ge j}\\sum_{l \\ge j'} K_{il},

    the sum over pairs of jumps of the same column of the two-way suffix sums of K. Each block I
    of B rows forms its strip of K (B, n) tile by tile and its two-way suffix sums
    :math:`P^I_{jj'} = \\sum_{i \\in I, i \\ge j}\\sum_{l \\ge j'} K_{il}` (memory
    :math:`O(B n)`); :math:`P_{jj'} = P^I_{jj'} + \\sum_{I' > I} P^{I'}_{\\mathrm{first}(I'), j'}`
    for j in I, so each block passes on its first row at the jumps, and the rest is a sum over
    blocks. A sign process with flip probability a has :math:`m_c \\approx a n`, so this pays
    when :math:`a \\ll 1` (a slowly mixing chain; :mod:`numpyro_dsd.mcmc.bootstrap` chooses).
    Row blocks are split over ``devices`` (1-D mesh ``"tiles"``).

    Parameters
    ----------
    tile_fn, feats, consts, diag, block, devices
        As for :func:`weighted_pair_sum`.
    jumps : SignJumps
        From :func:`sign_jumps` with the same ``block``.

    Returns
    -------
    (k,) array in ``diag``'s dtype.

    Examples
    --------
    >>> from numpyro_dsd.stein.engine import prepare
    >>> x = jax.random.normal(jax.random.key(0), (40, 2))
    >>> sk = prepare(x, -x)
    >>> w = np.ones((40, 2), np.int8)
    >>> w[20:, 1] = -1  # the second column changes sign once
    >>> q = pair_quadratic_jumps(sk.tile_fn, sk.feats, sk.consts, sk.diag, sign_jumps(w, 8),
    ...     block=8, devices=tuple(jax.devices()[:1]))
    >>> dense = jnp.einsum("ic,ij,jc->c", w, sk.matrix(), w)
    >>> bool(jnp.allclose(q, dense, rtol=1e-4))
    True
    """
    n, k = int(diag.shape[0]), jumps.block_jumps.shape[1]
    dtype = diag.dtype
    fb, db = pad_blocks((feats, diag), n, block)
    nb = db.shape[0]
    live = (jnp.arange(nb * block) < n).astype(dtype)
    pad = -nb % len(devices)

    def grid(a: jax.Array) -> jax.Array:
        return jnp.pad(jnp.asarray(a), [(0, pad), (0, 0)])

    def local(blocks, p_local, p_other, p_col, p_weight, fb, consts, db, rows):
        def row_block(args: tuple[jax.Array, ...]) -> tuple[jax.Array, jax.Array]:
            i, a, b, c, wt = args
            strip = jax.lax.map(lambda j: _tile(tile_fn, fb, consts, db, i, j), jnp.arange(nb))
            strip = jnp.moveaxis(strip, 0, 1).reshape(block, nb * block)
            rows_live = jax.lax.dynamic_slice_in_dim(live, i * block, block)
            strip = strip * rows_live[:, None] * live[None, :]
            suffix = jax.lax.cumsum(jax.lax.cumsum(strip, 1, reverse=True), 0, reverse=True)
            within = jax.ops.segment_sum(wt.astype(dtype) * suffix[a, b], c, num_segments=k)
            return within, suffix[0, rows]

        within, first = jax.lax.map(row_block, (blocks, p_local, p_other, p_col, p_weight))
        return within, first

    mesh = Mesh(np.asarray(devices), ("tiles",))
    tiles, rep = PartitionSpec("tiles"), PartitionSpec()
    sharded = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(tiles,) * 5 + (rep,) * 4,
        out_specs=(tiles, tiles),
        check_vma=False,
    )
    blocks = jnp.minimum(jnp.arange(nb + pad), nb - 1)
    pairs = (jumps.pair_local, jumps.pair_other, jumps.pair_col, jumps.pair_weight)
    within, first = sharded(blocks, *map(grid, pairs), fb, consts, db, jnp.asarray(jumps.rows))
    within, first = within[:nb], first[:nb]
    later = jnp.cumsum(first[::-1], axis=0)[::-1] - first  # sum over the blocks after I
    vals = jnp.asarray(jumps.vals).astype(dtype)
    carry = jax.ops.segment_sum((later * vals).T, jnp.asarray(jumps.cols), num_segments=k)
    return jnp.sum(within, axis=0) + jnp.sum(carry.T * jnp.asarray(jumps.block_jumps), axis=0)
