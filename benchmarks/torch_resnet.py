"""A PyTorch reference of ``resnet_jax.models``, for benchmarks and cross-framework checks.

``torch_model_like(flax_model)`` builds the torch twin of a Flax ``models.ResNet``: the same
stem, blocks, shortcut option, stride placement, symmetric padding and BatchNorm settings, with
submodules named like the Flax variables (``blocks.stage1_block1.conv1``,
``...shortcut.proj_bn``, ``fc``). ``load_flax_variables(module, variables)`` copies a Flax
``{'params', 'batch_stats'}`` dict into it, so both nets compute the same function
(tests/test_torch_reference.py). Torch's own initialisation is not the paper's: copy weights
from Flax. Benchmark-only: nothing in ``resnet_jax`` imports torch.
"""

import flax
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from resnet_jax import models


class BatchNorm(nn.BatchNorm2d):
  """``BatchNorm2d`` that keeps Flax's running variance: the average of the biased variance."""

  def __init__(self, channels, momentum, epsilon):
    super().__init__(channels, eps=epsilon, momentum=1.0 - momentum)

  def forward(self, x):
    if not self.training:
      return super().forward(x)
    # Torch adds (1 - m) * n / (n - 1) * var to a copy (autograd keeps that copy); taking 1 / n
    # of the added term back out leaves Flax's (1 - m) * var.
    updated = self.running_var.clone()
    y = F.batch_norm(x, self.running_mean, updated, self.weight, self.bias, True,
                     self.momentum, self.eps)
    with torch.no_grad():
      count = x.numel() // x.shape[1]
      new_term = updated - (1.0 - self.momentum) * self.running_var
      self.running_var.copy_(updated - new_term / count)
    return y


def conv(in_channels, out_channels, kernel_size, stride=1):
  """Bias-free convolution padded (k - 1) / 2 on every side, like ``models.conv_factory``."""
  return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2,
                   bias=False)


class Shortcut(nn.Module):
  """Identity, zero-padded identity (A) or projection (B where the shape changes, C always)."""

  def __init__(self, in_channels, out_channels, stride, option, norm):
    super().__init__()
    self.stride, self.extra = stride, out_channels - in_channels
    shape_changes = stride != 1 or in_channels != out_channels
    self.project = option == 'C' or (option == 'B' and shape_changes)
    if self.project:
      self.proj_conv = conv(in_channels, out_channels, 1, stride)
      self.proj_bn = norm(out_channels)

  def forward(self, x):
    if self.project:
      return self.proj_bn(self.proj_conv(x))
    if self.stride != 1:
      x = x[:, :, ::self.stride, ::self.stride]
    return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x


class Block(nn.Module):
  """A basic ([3x3; 3x3]) or bottleneck ([1x1; 3x3; 1x1, 4w]) block, residual or plain."""

  def __init__(self, in_channels, width, stride, bottleneck, stride_on, residual, shortcut,
               norm):
    super().__init__()
    if bottleneck:
      s1, s3 = (stride, 1) if stride_on == '1x1' else (1, stride)
      layers = ((1, s1, width), (3, s3, width), (1, 1, 4 * width))
    else:
      layers = ((3, stride, width), (3, 1, width))
    self.depth = len(layers)
    channels = in_channels
    for i, (kernel, layer_stride, out) in enumerate(layers, 1):
      self.add_module(f'conv{i}', conv(channels, out, kernel, layer_stride))
      self.add_module(f'bn{i}', norm(out))
      channels = out
    self.out_channels = channels
    if residual:
      self.shortcut = Shortcut(in_channels, channels, stride, shortcut, norm)

  def forward(self, x):
    y = x
    for i in range(1, self.depth + 1):
      y = getattr(self, f'bn{i}')(getattr(self, f'conv{i}')(y))
      if i < self.depth:
        y = F.relu(y)
    if hasattr(self, 'shortcut'):
      y = y + self.shortcut(x)
    return F.relu(y)


class ResNet(nn.Module):
  """Stem, stages of blocks, global average pool and classifier; NCHW input."""

  def __init__(self, spec: models.ResNet, in_channels=3):
    super().__init__()
    if spec.bn_group_size:
      raise ValueError('The torch reference has no grouped ("virtual batch") BatchNorm; '
                       'use bn_group_size=0.')
    beyond = [f for f in ('preact', 'deep_stem', 'avg_down', 'stem_width') if getattr(spec, f)]
    if beyond or (spec.groups, spec.base_width) != (1, 64):
      raise ValueError('The torch reference builds the paper\'s nets only, not the options '
                       f'{beyond or ["groups", "base_width"]}.')
    norm = lambda c: BatchNorm(c, spec.bn_momentum, spec.bn_epsilon)
    imagenet = spec.stem == 'imagenet'
    channels = 64 if imagenet else spec.widths[0]
    self.stem_conv = conv(in_channels, channels, 7 if imagenet else 3, 2 if imagenet else 1)
    self.stem_bn = norm(channels)
    self.pool = nn.MaxPool2d(3, 2, padding=1) if imagenet else nn.Identity()
    bottleneck = spec.block is models.BottleneckBlock
    self.blocks = nn.ModuleDict()
    for stage, (num_blocks, width) in enumerate(zip(spec.stage_sizes, spec.widths), 1):
      for index in range(1, num_blocks + 1):
        stride = 2 if stage > 1 and index == 1 else 1
        block = Block(channels, width, stride, bottleneck, spec.bottleneck_stride_on,
                      spec.residual, spec.shortcut, norm)
        self.blocks[f'stage{stage}_block{index}'] = block
        channels = block.out_channels
    self.fc = nn.Linear(channels, spec.num_classes)

  def forward(self, x):
    x = self.pool(F.relu(self.stem_bn(self.stem_conv(x))))
    for block in self.blocks.values():
      x = block(x)
    return self.fc(x.mean((2, 3)))


def torch_model_like(flax_model: models.ResNet, in_channels: int = 3) -> ResNet:
  """The torch twin of a Flax ``models.ResNet`` (its ``dtype`` is ignored: use autocast)."""
  return ResNet(flax_model, in_channels)


# Flax leaf name -> (torch tensor name, HWIO/IO kernel -> OIHW/OI layout).
_LEAVES = {
    'kernel': 'weight', 'scale': 'weight', 'bias': 'bias',
    'mean': 'running_mean', 'var': 'running_var',
}


def _torch_key(path) -> str:
  prefix = ('blocks',) if path[0].startswith('stage') else ()
  return '.'.join(prefix + tuple(path[:-1]) + (_LEAVES[path[-1]],))


def _torch_layout(value) -> np.ndarray:
  """A float32 copy in torch's layout: HWIO conv kernels -> OIHW, IO dense kernels -> OI."""
  value = np.asarray(value, np.float32)
  if value.ndim == 4:
    value = value.transpose(3, 2, 0, 1)
  elif value.ndim == 2:
    value = value.T
  return np.array(value, order='C')


def flax_to_torch_state(tree) -> dict:
  """A Flax variables (or gradients) tree as ``{torch state_dict key: torch.Tensor}``.

  Accepts variable collections (``{'params': ..., 'batch_stats': ...}``, either or both) or a
  bare params tree, in either layout (``models.layouts``).
  """
  is_collections = set(tree) <= {'params', 'batch_stats'}
  collections = models.unrolled(tree if is_collections else {'params': tree})
  flat = {}
  for collection in collections.values():
    for path, value in flax.traverse_util.flatten_dict(collection).items():
      flat[_torch_key(path)] = torch.from_numpy(_torch_layout(value))
  return flat


def load_flax_variables(module: ResNet, variables) -> ResNet:
  """Copies Flax ``{'params', 'batch_stats'}`` into ``module``; every tensor must match."""
  state = flax_to_torch_state(variables)
  missing, unexpected = module.load_state_dict(state, strict=False)
  missing = [k for k in missing if not k.endswith('num_batches_tracked')]
  if missing or unexpected:
    raise ValueError(f'Flax variables do not fit the torch model: missing {missing}, '
                     f'unexpected {unexpected}.')
  return module
