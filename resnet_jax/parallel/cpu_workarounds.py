"""XLA:CPU workarounds, applied to a step from outside the model, which stays as the paper has it.

``with_block_barriers(step)`` traces ``step`` with every residual block's input (the stem's
output and each earlier block's) passed through ``fusion_barrier``. XLA:CPU otherwise recomputes
each block's output (BatchNorm, residual add, ReLU of every earlier block in the stage) inside
every layout transpose that feeds a filter-gradient convolution; materialising the block inputs
once removes that recomputation. The values are unchanged bit for bit, so the barrier is a choice
of how a step executes, not of what it computes; other backends do not need it.

``with_loop_friendly_convs(model)`` gives the convolutions of a net's scanned blocks
(``ResNet.scan_blocks``) gradients that XLA:CPU runs fast inside the scan's loop
(``conv_with_canonical_gradients``); the gradients are the same bit for bit.
"""

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

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


_NHWC = ('NHWC', 'HWIO', 'NHWC')


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _stride_1_conv(x, kernel, padding, precision):
  return lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=_NHWC,
                                  precision=precision)


def _stride_1_conv_forward(x, kernel, padding, precision):
  return _stride_1_conv(x, kernel, padding, precision), (x, kernel)


def _stride_1_conv_backward(padding, precision, residuals, grad):
  x, kernel = residuals
  # The input's gradient: the output's, convolved with the kernel turned by 180 degrees.
  back = [(size - 1 - low, size - 1 - high) for size, (low, high) in zip(kernel.shape, padding)]
  x_grad = lax.conv_general_dilated(grad, jnp.flip(kernel, (0, 1)).swapaxes(2, 3), (1, 1), back,
                                    dimension_numbers=_NHWC, precision=precision)
  # The kernel's: the input's channels as the batch, its examples as the features.
  kernel_grad = lax.conv_general_dilated(
      x.transpose(3, 1, 2, 0), grad.transpose(1, 2, 0, 3), (1, 1), padding,
      dimension_numbers=_NHWC, precision=precision).transpose(1, 2, 0, 3)
  return x_grad, kernel_grad


_stride_1_conv.defvjp(_stride_1_conv_forward, _stride_1_conv_backward)


def conv_with_canonical_gradients(lhs, rhs, window_strides, padding, lhs_dilation=None,
                                  rhs_dilation=None, dimension_numbers=None,
                                  feature_group_count=1, precision=None):
  """``lax.conv_general_dilated`` (Flax's ``nn.Conv`` calls it so) with gradients that XLA:CPU
  runs fast inside a loop.

  Outside a loop, XLA:CPU rewrites a convolution's gradients into NHWC/HWIO convolutions for its
  fast library kernels; inside a ``while`` body it leaves them as they are and runs them on its
  generic path, about 50x slower (benchmarks/RESULTS.md, section 10). Here the gradients are
  written in that form to begin with: the values XLA computes outside a loop, bit for bit. Only
  2-D, stride-1, ungrouped, undilated NHWC convolutions (a scanned block's) take this path;
  others go to lax as they are.
  """
  simple = (not isinstance(padding, str) and tuple(window_strides) == (1, 1)
            and feature_group_count == 1
            and all(d in (None, 1) for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
            and dimension_numbers == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC))
  if simple:
    return _stride_1_conv(lhs, rhs, tuple(map(tuple, padding)), precision)
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                  rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                  feature_group_count=feature_group_count, precision=precision)


def with_loop_friendly_convs(model: nn.Module) -> nn.Module:
  """``model`` (a ``models.ResNet``) with ``conv_with_canonical_gradients`` in its scanned
  blocks: the same function and gradients, fast on XLA:CPU."""
  return model.clone(scan_conv=conv_with_canonical_gradients)
