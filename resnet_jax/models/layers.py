"""The layers every net is built from: convolutions, BatchNorm with grouped statistics, and the
two regularisers that draw random masks in training (dropout, stochastic depth)."""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Any

# He et al. (2015b) "MSRA" initialisation: zero-mean Gaussian with std sqrt(2 / fan_in).
he_normal = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')


def symmetric_padding(kernel_size: int):
  """Pads (k - 1) / 2 on every side, as the reference Caffe model does (not TF's 'SAME')."""
  pad = (kernel_size - 1) // 2
  return ((pad, pad), (pad, pad))


def conv_factory(dtype, conv_general_dilated: Callable | None = None) -> ModuleDef:
  """Bias-free convolutions with He initialisation and the reference model's symmetric padding;
  ``groups`` splits the channels into groups convolved apart (ResNeXt). ``conv_general_dilated``
  computes them (None: ``lax.conv_general_dilated``)."""

  def conv(features, kernel_size, strides=1, groups=1, name=None):
    return nn.Conv(features, kernel_size, strides=strides,
                   padding=symmetric_padding(kernel_size[0]), use_bias=False,
                   feature_group_count=groups, kernel_init=he_normal, dtype=dtype,
                   param_dtype=jnp.float32, conv_general_dilated=conv_general_dilated,
                   name=name)

  return conv


def average_pool_2x2(x, strides: int):
  """2x2 average pooling of stride ``strides`` over a map of any size: a window that the map's
  odd edge cuts averages the pixels it has (PyTorch's ``ceil_mode=True,
  count_include_pad=False``, as timm's ResNet-D shortcut pools)."""
  padding = tuple((0, (-size) % strides) for size in x.shape[1:3])
  return nn.avg_pool(x, (2, 2), strides=(strides, strides), padding=padding,
                     count_include_pad=False)


def drop_branch(branch, rate, rng):
  """Stochastic depth (Huang et al. 2016) on a residual branch: each example's branch is zeroed
  with probability ``rate`` and otherwise scaled by 1 / (1 - rate), so its expectation is the
  branch and evaluation uses the branch as it is. ``rate`` may be traced (a scanned stage)."""
  keep = 1.0 - jnp.asarray(rate, jnp.float32)
  kept = jax.random.bernoulli(rng, keep, (branch.shape[0],) + (1,) * (branch.ndim - 1))
  return branch * (kept / keep).astype(branch.dtype)


class GroupedBatchNorm(nn.Module):
  """BatchNorm whose training statistics come from fixed-size groups of examples.

  These are the "virtual batch" (ghost) statistics of a per-replica BatchNorm, with a group size
  fixed by the config instead of by the number of devices, so a run does not depend on how many
  devices execute it. Evaluation uses the running averages, exactly like ``nn.BatchNorm``; the
  variable names match it, so checkpoints are interchangeable.
  """
  group_size: int
  use_running_average: bool
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Any = jnp.float32
  scale_init: Callable = nn.initializers.ones

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    scale = self.param('scale', self.scale_init, (features,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (features,), jnp.float32)
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,), jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (features,), jnp.float32)
    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
      y = (x.astype(jnp.float32) - mean) * jax.lax.rsqrt(var + self.epsilon)
    else:
      batch = x.shape[0]
      if batch % self.group_size:
        raise ValueError(f'Batch of {batch} examples is not a multiple of the BatchNorm group '
                         f'size {self.group_size}; choose a batch size divisible by it.')
      groups = x.astype(jnp.float32).reshape((batch // self.group_size, self.group_size)
                                             + x.shape[1:])
      axes = tuple(range(1, groups.ndim - 1))
      mean = groups.mean(axes, keepdims=True)
      var = jnp.square(groups - mean).mean(axes, keepdims=True)  # Two-pass: no cancellation.
      if not self.is_initializing():
        reduce_axes = tuple(range(groups.ndim - 1))
        m = self.momentum
        ra_mean.value = m * ra_mean.value + (1 - m) * mean.mean(reduce_axes)
        ra_var.value = m * ra_var.value + (1 - m) * var.mean(reduce_axes)
      y = ((groups - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
    return (y * scale + bias).astype(self.dtype)
