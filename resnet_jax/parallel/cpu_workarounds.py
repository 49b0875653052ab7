"""XLA:CPU workarounds, applied to a step from outside the model, which stays as the paper has it.

``with_block_barriers(step)`` traces ``step`` with every residual block's input (the stem's
output and each earlier block's) passed through ``fusion_barrier``. XLA:CPU otherwise recomputes
each block's output (BatchNorm, residual add, ReLU of every earlier block in the stage) inside
every layout transpose that feeds a filter-gradient convolution; materialising the block inputs
once removes that recomputation. The values are unchanged bit for bit, so the barrier is a choice
of how a step executes, not of what it computes; other backends do not need it.
"""

import functools
from collections.abc import Callable

import flax.linen as nn
import jax

from resnet_jax import models


@jax.custom_vjp
def fusion_barrier(x):
  """The identity, as an op that XLA cannot fuse into its consumers: ``x`` is written once.

  Rewriting one column of ``x`` with itself is a scatter, which XLA never fuses into a consumer.
  """
  column = (slice(None),) + (0,) * (x.ndim - 1)
  return x.at[column].set(x[column], out_sharding=jax.typeof(x).sharding)


fusion_barrier.defvjp(lambda x: (fusion_barrier(x), None), lambda _, g: (g,))


def _barrier_block_inputs(next_fun, args, kwargs, context):
  if isinstance(context.module, models.Block) and context.method_name == '__call__':
    args = (fusion_barrier(args[0]), *args[1:])
  return next_fun(*args, **kwargs)


def with_block_barriers(step: Callable) -> Callable:
  """``step``, traced with a fusion barrier on the input of every block of any model it applies."""

  @functools.wraps(step)
  def wrapped(*args, **kwargs):
    with nn.intercept_methods(_barrier_block_inputs):
      return step(*args, **kwargs)

  return wrapped
