"""Where batches go: meshes of devices, arrays sharded along ``data``, fixed-size padded batches.

A mesh over all devices of all processes (training) needs every process to make the same calls
with the same shapes; a mesh over this process's own devices (``local_mesh``) does not, so a
process can run a computation of its own, as often and with whatever shapes its data needs.
Nothing here imports TensorFlow.
"""

from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = 'data'


def create_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh over ``devices`` (default: all devices of all processes), batch along ``data``,
  its axis of JAX's default type (explicit) whichever devices it holds."""
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,), devices=devices)


def local_mesh() -> jax.sharding.Mesh:
  """A 1-D mesh over this process's devices only: its computations involve no other process."""
  return create_mesh(jax.local_devices())


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) axis split along ``data``."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def to_global(batch, sharding: NamedSharding):
  """Global arrays, sharded on ``data``, from this process's slice of a batch (any pytree).

  With a sharding over this process's devices only, the global array is the local batch.
  """
  return jax.tree.map(lambda v: jax.make_array_from_process_local_data(sharding, v), batch)


def prefetch_to_devices(batches: Iterator[Any], sharding: NamedSharding,
                        size: int = 2) -> Iterator[Any]:
  """Keeps ``size`` batches (pytrees: a batch, or a call's tuple of them) in flight to the
  devices while the current one computes."""
  queue = []
  for batch in batches:
    queue.append(to_global(batch, sharding))
    if len(queue) > size:
      yield queue.pop(0)
  yield from queue


def round_up(count: int, multiple: int) -> int:
  """The smallest multiple of ``multiple`` that is at least ``count`` (and at least one)."""
  return max(-(-count // multiple), 1) * multiple


def pad_batch(batch, size: int) -> tuple[Any, np.ndarray]:
  """``(batch padded with zeros to size examples, mask)``; mask is True for the real examples.

  ``batch``: numpy arrays, or a dict, tuple or other pytree of them, all with the same leading
  (example) axis of at most ``size``. One fixed size means one compiled shape for a partial
  batch too; the mask keeps the padding out of every count.
  """
  leaves = jax.tree.leaves(batch)
  counts = {len(leaf) for leaf in leaves}
  if len(counts) != 1:
    raise ValueError(f'The arrays of a batch disagree on its size: {sorted(counts)} examples.')
  count, = counts
  if count > size:
    raise ValueError(f'A batch of {count} examples does not fit the fixed size {size}.')
  padded = jax.tree.map(
      lambda leaf: np.pad(leaf, ((0, size - count),) + ((0, 0),) * (np.ndim(leaf) - 1)), batch)
  return padded, np.arange(size) < count
