"""The two layouts of a net's variables, and the conversion between them.

Unrolled, every block is a module of its own: ``stage3_block1``, ``stage3_block2``, ...
Scanned (``ResNet.scan_blocks``), a stage's blocks after its first are one module whose
variables carry a leading axis, block 2 at index 0: ``stage3_block1``, ``stage3_blocks``. The
values are the same, so a checkpoint, an export or torchvision's weights of one layout load into
a net of the other through ``to_layout``.
"""

import re
from collections.abc import Collection, Mapping

import jax
import jax.numpy as jnp
import numpy as np

_BLOCK = re.compile(r'(stage\d+)_block(\d+)')
_STACKED = re.compile(r'(stage\d+)_blocks')


def stacked_name(stage: str) -> str:
  """The module of ``stage``'s stacked blocks: 'stage3' -> 'stage3_blocks'."""
  return f'{stage}_blocks'


def _holds_blocks(node) -> bool:
  return isinstance(node, Mapping) and any(
      _BLOCK.fullmatch(str(k)) or _STACKED.fullmatch(str(k)) for k in node)


def stacked_stages(tree) -> frozenset[str]:
  """The stages whose blocks ``tree`` (variables, an optimizer state, abstract or checkpoint
  metadata) holds stacked."""
  found = set()
  for node in jax.tree.leaves(tree, is_leaf=_holds_blocks):
    if _holds_blocks(node):
      found.update(m[1] for m in map(_STACKED.fullmatch, map(str, node)) if m)
  return frozenset(found)


def _stack(*leaves):
  first = leaves[0]
  if isinstance(first, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct((len(leaves), *first.shape), first.dtype, sharding=first.sharding)
  return (np.stack if isinstance(first, np.ndarray) else jnp.stack)(leaves)


def _take(leaf, index: int):
  if isinstance(leaf, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype, sharding=leaf.sharding)
  return leaf[index]


def _convert(modules: Mapping, stacked: Collection[str]) -> dict:
  """One net's modules, each stage in ``stacked`` stacked and every other one unrolled."""
  modules = dict(modules)
  for name in [n for n in modules if _STACKED.fullmatch(str(n))]:
    stage, group = _STACKED.fullmatch(name)[1], modules.pop(name)
    for index in range(jax.tree.leaves(group)[0].shape[0]):
      modules[f'{stage}_block{index + 2}'] = jax.tree.map(lambda leaf, i=index: _take(leaf, i),
                                                          group)
  for stage in stacked:
    numbers = sorted(int(m[2]) for m in map(_BLOCK.fullmatch, map(str, modules))
                     if m and m[1] == stage and int(m[2]) > 1)
    if numbers:
      modules[stacked_name(stage)] = jax.tree.map(
          _stack, *[modules.pop(f'{stage}_block{n}') for n in numbers])
  return modules


def to_layout(tree, stacked: Collection[str]):
  """``tree`` with the blocks of the stages in ``stacked`` stacked and all others unrolled.

  ``tree`` is any pytree that holds a net's modules by name (``{'params', 'batch_stats'}``, an
  optimizer state, a ``TrainState``), of arrays, numpy arrays or ``jax.ShapeDtypeStruct``s.
  """
  return jax.tree.map(lambda node: _convert(node, stacked) if _holds_blocks(node) else node,
                      tree, is_leaf=_holds_blocks)


def unrolled(tree):
  """``tree`` in the unrolled layout: one module per block."""
  return to_layout(tree, ())
