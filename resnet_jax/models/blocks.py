"""Residual blocks: the paper's units (BatchNorm after each convolution, ReLU after the addition)
and the pre-activation units of He et al. (2016, "Identity Mappings in Deep Residual Networks":
BN-ReLU before each convolution, nothing after the addition).

A block is its branch's convolutions (``BasicBlock``: two 3x3; ``BottleneckBlock``: 1x1, 3x3,
1x1, the 3x3 grouped for ResNeXt and widened for wide ResNets) laid out in one of the two unit
styles, with a shortcut, optional dropout between the convolutions (wide ResNets) and optional
stochastic depth on the branch.
"""

from typing import ClassVar, NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from resnet_jax.models.layers import ModuleDef, average_pool_2x2, drop_branch


class Shortcut(nn.Module):
  """The shortcut of one block: identity, zero-padded identity (A) or projection (B, C).

  ``norm=None`` leaves the projection without BatchNorm (pre-activation units); ``avg_down``
  averages 2x2 windows before a strided projection, which then has stride 1 (ResNet-D).
  """
  out_channels: int
  strides: int
  option: str
  conv: ModuleDef
  norm: ModuleDef | None
  avg_down: bool = False

  @nn.compact
  def __call__(self, x):
    shape_changes = self.strides != 1 or x.shape[-1] != self.out_channels
    if self.option == 'C' or (self.option == 'B' and shape_changes):
      strides = self.strides
      if self.avg_down and strides != 1:
        x, strides = average_pool_2x2(x, strides), 1
      x = self.conv(self.out_channels, (1, 1), strides=strides, name='proj_conv')(x)
      return x if self.norm is None else self.norm(name='proj_bn')(x)
    if self.strides != 1:
      x = x[:, ::self.strides, ::self.strides, :]
    extra = self.out_channels - x.shape[-1]
    if extra:
      x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, extra)))
    return x


class Conv(NamedTuple):
  """One convolution of a branch."""
  kernel: int
  features: int
  strides: int = 1
  groups: int = 1


class Block(nn.Module):
  """What both blocks are built from: output width, stride, shortcut and layer factories.

  Attributes beyond the paper's: ``preact`` lays the block out as a pre-activation unit, whose
  first BN-ReLU ``preactivate=False`` leaves out (where the stem's own BN-ReLU precedes it);
  ``groups`` and ``base_width`` shape a bottleneck's 3x3 convolution as torchvision does (its
  width is ``width * base_width / 64 * groups``); ``avg_down`` see ``Shortcut``;
  ``dropout_rate`` drops activations before every convolution after the first; ``drop_path``
  drops the whole branch per example at the rate given to the call (stochastic depth). Both draw
  from the 'dropout' rng, and only where ``deterministic`` is False.
  """
  width: int
  strides: int
  residual: bool
  shortcut: str
  conv: ModuleDef
  norm: ModuleDef
  last_norm: ModuleDef
  stride_on: str = '1x1'  # Bottleneck only; basic blocks stride their first 3x3 conv.
  preact: bool = False
  preactivate: bool = True
  groups: int = 1
  base_width: int = 64
  avg_down: bool = False
  dropout_rate: float = 0.0
  drop_path: bool = False
  deterministic: bool = True

  expansion: ClassVar[int]

  def convs(self) -> list[Conv]:
    raise NotImplementedError

  @nn.compact
  def __call__(self, x, drop_rate=0.0):
    """The block's output; ``drop_rate`` is its branch's stochastic-depth rate."""
    unit = self._preactivation_unit if self.preact else self._original_unit
    return unit(x, drop_rate)

  def _original_unit(self, x, drop_rate):
    """relu(branch(x) + shortcut(x)), BatchNorm after each of the branch's convolutions."""
    y = x
    for index, conv in enumerate(self.convs(), 1):
      if index > 1:
        y = self._dropout(nn.relu(y))
      y = self._norm(index)(self._conv(index, conv)(y))
    skip = self._shortcut(self.norm)(x) if self.residual else None
    return nn.relu(self._add(y, skip, drop_rate))

  def _preactivation_unit(self, x, drop_rate):
    """branch(x) + shortcut, BN-ReLU before each of the branch's convolutions; the shortcut is
    the input itself, or where it is more than the identity, of the pre-activated input."""
    out_channels = self.width * self.expansion
    identity = self.strides == 1 and x.shape[-1] == out_channels and self.shortcut != 'C'
    y = nn.relu(self._norm(1)(x)) if self.preactivate else x
    skip = None
    if self.residual:
      skip = x if identity else self._shortcut(None)(y)
    for index, conv in enumerate(self.convs(), 1):
      if index > 1:
        y = self._dropout(nn.relu(self._norm(index)(y)))
      y = self._conv(index, conv)(y)
    return self._add(y, skip, drop_rate)

  def _conv(self, index: int, conv: Conv):
    return self.conv(conv.features, (conv.kernel, conv.kernel), strides=conv.strides,
                     groups=conv.groups, name=f'conv{index}')

  def _norm(self, index: int):
    """The BatchNorm of the branch's ``index``-th convolution (after it, or before it in a
    pre-activation unit); the last is ``last_norm`` (zero-initialised on request)."""
    last = index == len(self.convs())
    return (self.last_norm if last else self.norm)(name=f'bn{index}')

  def _shortcut(self, norm):
    return Shortcut(self.width * self.expansion, self.strides, self.shortcut, self.conv, norm,
                    avg_down=self.avg_down, name='shortcut')

  def _dropout(self, y):
    if self.dropout_rate and not self.deterministic:
      y = nn.Dropout(self.dropout_rate, deterministic=False)(y)
    return y

  def _add(self, branch, skip, drop_rate):
    if skip is None:
      return branch
    if self.drop_path and not self.deterministic:
      branch = drop_branch(branch, drop_rate, self.make_rng('dropout'))
    return branch + skip


class BasicBlock(Block):
  """Two 3x3 convolutions: [3x3, w; 3x3, w]."""
  expansion = 1

  def convs(self) -> list[Conv]:
    return [Conv(3, self.width, self.strides), Conv(3, self.width)]


class BottleneckBlock(Block):
  """[1x1, w'; 3x3, w'; 1x1, 4w], strided on the first 1x1 (paper) or on the 3x3 ("v1.5");
  w' = w except in ResNeXt and wide ResNets (``groups``, ``base_width``)."""
  expansion = 4

  def convs(self) -> list[Conv]:
    inner = int(self.width * self.base_width / 64) * self.groups
    stride_1x1, stride_3x3 = ((self.strides, 1) if self.stride_on == '1x1'
                              else (1, self.strides))
    return [Conv(1, inner, stride_1x1), Conv(3, inner, stride_3x3, self.groups),
            Conv(1, self.width * self.expansion)]
