"""The training loop's evaluation, which notebooks run too: the jitted eval step on a mesh and the
loop over a split's padded, masked batches (``input_pipeline.eval_batches``).

``train`` evaluates with it during training and ``runs.Run.evaluate`` after, so both compute the
same metrics with the same compiled step; the evaluation modes (``evaluation``) build on the same
placement helpers.
"""

import functools
from collections.abc import Callable, Iterable

import jax

from resnet_jax import steps
from resnet_jax.parallel import sharding as placement


def jit_eval_step(model, mesh: jax.sharding.Mesh, image_correction=None) -> Callable:
  """``steps.eval_step`` jitted for ``mesh``: variables replicated, batch split on ``data``;
  ``image_correction`` (``input_pipeline.imagenet_mean_correction``) a constant of the step."""
  replicated = placement.replicated(mesh)
  step = functools.partial(steps.eval_step, model=model)
  return jax.jit(steps.with_image_correction(step, image_correction),
                 in_shardings=(replicated, placement.batch_sharding(mesh)),
                 out_shardings=replicated)


def evaluate(eval_fn: Callable, variables, batches: Iterable[dict], sharding,
             prefix: str = 'eval_') -> dict:
  """Metrics over a whole split, named ``prefix + metric``; padded examples are masked out, so
  nothing is dropped."""
  total = None
  for batch in placement.prefetch_to_devices(batches, sharding):
    batch_metrics = eval_fn(variables, batch)
    total = batch_metrics if total is None else total.merge(batch_metrics)
  return {f'{prefix}{k}': float(v) for k, v in total.compute().items()}
