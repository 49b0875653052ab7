"""Several training steps in one jitted call (``config.steps_per_call``).

Each call ends where the loop has something to do (log, evaluate, checkpoint; see
``call_ends``), so a call of K steps computes exactly what K calls of one step would. On
accelerators the steps are a ``lax.scan``. XLA:CPU runs gradient convolutions far slower inside
a while loop, and ``lax.scan`` keeps a one-trip loop even when unrolled (benchmarks/RESULTS.md),
so on CPU the steps are unrolled in Python instead; unrolled, independent work of consecutive
steps overlaps on the CPU's threads.
"""

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


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


def run_steps(step_fn: Callable, state, batches: Sequence[Any], *, unroll: bool):
  """One ``step_fn(state, batch) -> (state, metrics)`` per entry of ``batches``, merged in order.

  ``batches`` holds one input per step (pytrees of arrays, or all None when the step makes its
  own batch). Looped, they are stacked on the device (``lax.scan`` takes one array per leaf).
  """
  if unroll or len(batches) == 1:
    metrics = []
    for batch in batches:
      state, step_metrics = step_fn(state, batch)
      metrics.append(step_metrics)
    return state, functools.reduce(lambda merged, m: merged.merge(m), metrics)
  stacked = None if batches[0] is None else jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
  state, step_metrics = jax.lax.scan(step_fn, state, stacked, length=len(batches))
  return state, _merge_steps(step_metrics)


def make_train_fn(train_step: Callable, mesh: jax.sharding.Mesh) -> Callable:
  """``(state, batches) -> (state, metrics)``: one step per batch of the tuple ``batches``.

  ``train_step(state, batch) -> (state, metrics)`` is the usual step; each batch is a dict of
  arrays split along ``'data'``. Batches travel to the devices one by one, unstacked, so the host
  copies nothing. The state is donated.
  """
  replicated = NamedSharding(mesh, P())
  return jax.jit(functools.partial(run_steps, train_step, unroll=unrolls(mesh)), donate_argnums=0,
                 in_shardings=(replicated, NamedSharding(mesh, P('data'))),
                 out_shardings=(replicated, replicated))


def group_batches(batches: Iterator[dict], sizes: Iterable[int]) -> Iterator[tuple[dict, ...]]:
  """Consecutive batches in tuples of ``sizes[i]`` (the batches themselves, not copies)."""
  for size in sizes:
    yield tuple([next(batches) for _ in range(size)])
