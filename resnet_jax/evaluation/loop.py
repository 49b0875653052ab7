"""The training loop's evaluation, which notebooks run too: the jitted eval step on a mesh and the
loop over a split's padded, masked batches (``data.dataset.Dataset.eval_split``).

``train`` evaluates with it during training and ``notebook.Run.evaluate`` after, so both compute
the same metrics with the same compiled step; the paper's protocols (``protocols``) build on the
same sharding helpers.
"""

import functools
from collections.abc import Callable, Iterable

import jax

from resnet_jax import steps
from resnet_jax.parallel import sharding


def jit_eval_step(model, mesh: jax.sharding.Mesh, image_correction=None) -> Callable:
  """``steps.eval_step`` jitted for ``mesh``: variables replicated, batch split on ``data``;
  ``image_correction`` (the data's ``mean_correction()``) a constant of the step."""
  replicated = sharding.replicated(mesh)
  step = functools.partial(steps.eval_step, model=model, image_correction=image_correction)
  return jax.jit(step, in_shardings=(replicated, sharding.batch_sharding(mesh)),
                 out_shardings=replicated)


def evaluate(eval_fn: Callable, variables, batches: Iterable[dict], batch_sharding,
             prefix: str = 'eval_') -> dict:
  """Metrics over a whole split, named ``prefix + metric``; padded examples are masked out, so
  nothing is dropped."""
  return evaluate_each(eval_fn, {prefix: variables}, batches, batch_sharding)[prefix]


def evaluate_each(eval_fn: Callable, variables: dict, batches: Iterable[dict],
                  batch_sharding) -> dict[str, dict]:
  """``evaluate`` of several variables, ``{prefix: variables}``, in one pass over the split
  (each batch is read and put on the devices once): ``{prefix: {prefix + metric: value}}``."""
  totals = dict.fromkeys(variables)
  for batch in sharding.prefetch_to_devices(batches, batch_sharding):
    for prefix, values in variables.items():
      batch_metrics = eval_fn(values, batch)
      totals[prefix] = (batch_metrics if totals[prefix] is None
                        else totals[prefix].merge(batch_metrics))
  return {prefix: {f'{prefix}{k}': float(v) for k, v in total.compute().items()}
          for prefix, total in totals.items()}
