"""Several training steps in one jitted call (``config.steps_per_call``).

Each call ends where the loop has something to do (log, evaluate, checkpoint; see
``call_ends``), so a call of K steps computes exactly what K calls of one step would. On
accelerators the steps are a ``lax.scan``. XLA:CPU runs gradient convolutions tens of times
slower inside a while loop, and ``lax.scan`` keeps a one-trip loop even when unrolled
(measured, see benchmarks/RESULTS.md), so on CPU the steps are unrolled in Python instead;
unrolled, independent work of consecutive steps overlaps on the CPU's threads.
"""

import functools
from typing import Any, Callable, Iterable, Iterator, Optional

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P


def call_ends(start_step: int, num_steps: int, steps_per_call: int,
              intervals: Iterable[int]) -> list[int]:
  """The steps at which the calls after ``start_step`` end.

  Calls end at every multiple of ``steps_per_call`` and of each interval (logging, evaluation,
  checkpoints), and at ``num_steps``; so those actions land on call boundaries. Choose
  ``steps_per_call`` dividing the intervals, or shorter calls (one more compile each) fill in.
  """
  ends = {num_steps}
  for every in (steps_per_call, *intervals):
    first = (start_step // every + 1) * every
    ends.update(range(first, num_steps, every))
  return sorted(e for e in ends if e > start_step)


def unrolls(mesh: jax.sharding.Mesh) -> bool:
  """Whether calls on ``mesh`` unroll their steps (CPU) rather than loop (accelerators)."""
  return mesh.devices.flat[0].platform == 'cpu'


def _merge_steps(stacked):
  """Merges metrics stacked along a leading steps axis, in order (as the per-step loop does)."""
  first = jax.tree.map(lambda x: x[0], stacked)
  rest = jax.tree.map(lambda x: x[1:], stacked)
  return jax.lax.scan(lambda merged, m: (merged.merge(m), None), first, rest)[0]


def run_steps(step_fn: Callable, state, num_steps: int, batches: Optional[Any] = None, *,
              unroll: bool):
  """``num_steps`` of ``step_fn(state, batch) -> (state, metrics)``, metrics merged in order.

  ``batches`` (optional) is a pytree with a leading axis of ``num_steps``: step i gets its
  slice i; without it every step gets None.
  """
  if unroll or num_steps == 1:
    metrics = []
    for i in range(num_steps):
      batch = None if batches is None else jax.tree.map(lambda x: x[i], batches)
      state, step_metrics = step_fn(state, batch)
      metrics.append(step_metrics)
    return state, functools.reduce(lambda merged, m: merged.merge(m), metrics)
  state, stacked = jax.lax.scan(step_fn, state, batches, length=num_steps)
  return state, _merge_steps(stacked)


def stacked_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Batches stacked [steps, batch, ...]: every step's batch split along ``'data'``."""
  return NamedSharding(mesh, P(None, 'data'))


def make_train_fn(train_step: Callable, mesh: jax.sharding.Mesh) -> Callable:
  """``(state, batches) -> (state, metrics)``: one step per leading index of ``batches``.

  ``train_step(state, batch) -> (state, metrics)`` is the usual step; ``batches`` is a dict of
  arrays [steps, batch, ...] placed with ``stacked_sharding``. The state is donated.
  """
  replicated = NamedSharding(mesh, P())

  def run(state, batches):
    num_steps = jax.tree.leaves(batches)[0].shape[0]
    return run_steps(train_step, state, num_steps, batches, unroll=unrolls(mesh))

  return jax.jit(run, donate_argnums=0, in_shardings=(replicated, stacked_sharding(mesh)),
                 out_shardings=(replicated, replicated))


def group_batches(batches: Iterator[dict], sizes: Iterable[int]) -> Iterator[dict]:
  """Consecutive batches stacked into groups of ``sizes[i]``: arrays [size, batch, ...]."""
  for size in sizes:
    group = [next(batches) for _ in range(size)]
    yield {key: np.stack([batch[key] for batch in group]) for key in group[0]}
