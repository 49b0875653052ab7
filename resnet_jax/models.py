"""Plain and residual networks of He et al. (2015), CIFAR and ImageNet families, in Flax Linen.

One parametrised family covers every network in the paper:

* ``ResNet(stage_sizes, block, widths, stem, residual, shortcut, ...)`` builds a stem, stages of
  basic or bottleneck blocks, global average pooling and a fully connected classifier.
* ``residual=False`` removes every shortcut (the paper's *plain* nets); nothing else changes.
* ``shortcut`` picks the paper's option 'A' (zero-padded identity), 'B' (projection where the shape
  changes) or 'C' (projection on every block).

``create_model(name, num_classes, **overrides)`` returns a named variant, e.g. ``resnet56``.
Variables are ``{'params', 'batch_stats'}``; params are always float32, ``dtype`` sets the
compute precision of the convolutions and BatchNorm, whose statistics are reduced in float32,
and the global average pool and the classifier compute in float32.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Any

SHORTCUT_OPTIONS = ('A', 'B', 'C')
BOTTLENECK_STRIDE_ON = ('1x1', '3x3')

# He et al. (2015b) "MSRA" initialisation: zero-mean Gaussian with std sqrt(2 / fan_in).
he_normal = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')

# The name of the final fully connected layer, the only module whose shapes follow the classes.
CLASSIFIER = 'fc'


def symmetric_padding(kernel_size: int):
  """Pads (k - 1) / 2 on every side, as the reference Caffe model does (not TF's 'SAME')."""
  pad = (kernel_size - 1) // 2
  return ((pad, pad), (pad, pad))


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


class Shortcut(nn.Module):
  """The shortcut of one block: identity, zero-padded identity (A) or projection (B, C)."""
  out_channels: int
  strides: int
  option: str
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x):
    shape_changes = self.strides != 1 or x.shape[-1] != self.out_channels
    if self.option == 'C' or (self.option == 'B' and shape_changes):
      x = self.conv(self.out_channels, (1, 1), strides=self.strides, name='proj_conv')(x)
      return self.norm(name='proj_bn')(x)
    if self.strides != 1:
      x = x[:, ::self.strides, ::self.strides, :]
    extra = self.out_channels - x.shape[-1]
    if extra:
      x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, extra)))
    return x


class Block(nn.Module):
  """What both blocks are built from: output width, stride, shortcut and layer factories."""
  width: int
  strides: int
  residual: bool
  shortcut: str
  conv: ModuleDef
  norm: ModuleDef
  last_norm: ModuleDef
  stride_on: str = '1x1'  # Bottleneck only; basic blocks stride their first 3x3 conv.


class BasicBlock(Block):
  """Two 3x3 convolutions: [3x3, w; 3x3, w]."""
  expansion = 1

  @nn.compact
  def __call__(self, x):
    y = self.conv(self.width, (3, 3), strides=self.strides, name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = self.conv(self.width, (3, 3), name='conv2')(y)
    y = self.last_norm(name='bn2')(y)
    if self.residual:
      y = y + Shortcut(self.width, self.strides, self.shortcut, self.conv, self.norm,
                       name='shortcut')(x)
    return nn.relu(y)


class BottleneckBlock(Block):
  """[1x1, w; 3x3, w; 1x1, 4w], strided on the first 1x1 (paper) or on the 3x3 ("v1.5")."""
  expansion = 4

  @nn.compact
  def __call__(self, x):
    stride_1x1, stride_3x3 = ((self.strides, 1) if self.stride_on == '1x1'
                              else (1, self.strides))
    y = self.conv(self.width, (1, 1), strides=stride_1x1, name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = self.conv(self.width, (3, 3), strides=stride_3x3, name='conv2')(y)
    y = nn.relu(self.norm(name='bn2')(y))
    y = self.conv(self.width * self.expansion, (1, 1), name='conv3')(y)
    y = self.last_norm(name='bn3')(y)
    if self.residual:
      y = y + Shortcut(self.width * self.expansion, self.strides, self.shortcut, self.conv,
                       self.norm, name='shortcut')(x)
    return nn.relu(y)


def conv_factory(dtype) -> ModuleDef:
  """Bias-free convolutions with He initialisation and the reference model's symmetric padding."""

  def conv(features, kernel_size, strides=1, name=None):
    return nn.Conv(features, kernel_size, strides=strides,
                   padding=symmetric_padding(kernel_size[0]), use_bias=False,
                   kernel_init=he_normal, dtype=dtype, param_dtype=jnp.float32, name=name)

  return conv


class ResNet(nn.Module):
  """A plain or residual network: stem, stages of blocks, global average pool, classifier.

  Attributes:
    stage_sizes: blocks per stage; every stage after the first halves the map (stride 2).
    block: ``BasicBlock`` or ``BottleneckBlock``.
    widths: block width per stage (a bottleneck outputs 4x its width).
    stem: 'cifar' (3x3 conv, 16 filters) or 'imagenet' (7x7/2 conv, 64 filters, 3x3/2 max pool).
    num_classes: size of the fully connected classifier.
    residual: False gives the plain net: the same layers without shortcuts.
    shortcut: option 'A', 'B' or 'C' of the paper's Table 3.
    bottleneck_stride_on: '1x1' (reference model) or '3x3' ("v1.5") for bottleneck blocks.
    dtype: compute dtype (float32 or bfloat16) up to the global average pool; params stay
      float32. The pool and the classifier run in float32: they cost next to nothing, and
      bfloat16 logits would often tie.
    bn_momentum, bn_epsilon: BatchNorm running-average momentum and epsilon.
    bn_group_size: 0 for BatchNorm statistics over the whole (global) batch; otherwise the size
      of the groups of examples that each compute their own statistics ("virtual batch").
    bn_axis_name: where the network runs on one device's slice of the batch (inside
      ``jax.shard_map``), the mesh axis over which global BatchNorm averages its statistics, so
      they stay the global batch's; None where it sees the whole batch.
    zero_init_last_bn: zero-initialise the scale of the last BatchNorm of each residual branch.
    freeze_bn_stats: BatchNorm normalises with its running averages in training too and leaves
      them unchanged, as when fine-tuning trained weights on small batches (the paper: off).
  """
  stage_sizes: Sequence[int]
  block: ModuleDef
  widths: Sequence[int]
  stem: str
  num_classes: int
  residual: bool = True
  shortcut: str = 'B'
  bottleneck_stride_on: str = '1x1'
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  bn_group_size: int = 0
  bn_axis_name: str | None = None
  zero_init_last_bn: bool = False
  freeze_bn_stats: bool = False

  def setup(self):
    if self.shortcut not in SHORTCUT_OPTIONS:
      raise ValueError(f'Unknown shortcut option {self.shortcut!r}; use one of '
                       f'{", ".join(SHORTCUT_OPTIONS)}.')
    if self.bottleneck_stride_on not in BOTTLENECK_STRIDE_ON:
      raise ValueError(f'bottleneck_stride_on={self.bottleneck_stride_on!r}; use one of '
                       f'{", ".join(BOTTLENECK_STRIDE_ON)}.')
    if self.stem not in ('cifar', 'imagenet'):
      raise ValueError(f"Unknown stem {self.stem!r}; use 'cifar' or 'imagenet'.")

  def _norm(self, train: bool):
    running = not train or self.freeze_bn_stats
    if self.bn_group_size:
      return functools.partial(GroupedBatchNorm, group_size=self.bn_group_size,
                               use_running_average=running, momentum=self.bn_momentum,
                               epsilon=self.bn_epsilon, dtype=self.dtype)
    return functools.partial(nn.BatchNorm, use_running_average=running,
                             momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                             dtype=self.dtype, param_dtype=jnp.float32,
                             axis_name=self.bn_axis_name,
                             use_fast_variance=False)  # E[(x - mean)^2]: no cancellation.

  @nn.compact
  def __call__(self, x, train: bool):
    conv = conv_factory(self.dtype)
    norm = self._norm(train)
    last_norm = (functools.partial(norm, scale_init=nn.initializers.zeros)
                 if self.zero_init_last_bn and self.residual else norm)

    x = x.astype(self.dtype)
    if self.stem == 'cifar':
      x = conv(self.widths[0], (3, 3), name='stem_conv')(x)
      x = nn.relu(norm(name='stem_bn')(x))
    else:
      x = conv(64, (7, 7), strides=2, name='stem_conv')(x)
      x = nn.relu(norm(name='stem_bn')(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=symmetric_padding(3))

    for stage, (num_blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
      for index in range(num_blocks):
        strides = 2 if stage > 0 and index == 0 else 1
        x = self.block(width, strides, self.residual, self.shortcut, conv, norm, last_norm,
                       stride_on=self.bottleneck_stride_on,
                       name=f'stage{stage + 1}_block{index + 1}')(x)

    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=jnp.float32, param_dtype=jnp.float32,
                    name=CLASSIFIER)(x)


# --------------------------------------------------------------------------------------------
# The model zoo.
# --------------------------------------------------------------------------------------------


def cifar_net(n: int, residual: bool) -> dict:
  """The 6n+2-layer CIFAR-10 net: 3 stages of n basic blocks of width 16, 32, 64; option A."""
  return dict(stage_sizes=(n, n, n), block=BasicBlock, widths=(16, 32, 64), stem='cifar',
              residual=residual, shortcut='A')


def imagenet_net(stage_sizes: Sequence[int], block: ModuleDef, residual: bool) -> dict:
  """An ImageNet net of Table 1: four stages of width 64, 128, 256, 512; option B."""
  return dict(stage_sizes=tuple(stage_sizes), block=block, widths=(64, 128, 256, 512),
              stem='imagenet', residual=residual, shortcut='B')


# Every named network, one line each (paper, Sec. 4.2 and Table 1).
MODEL_SPECS = {
    # CIFAR-10, 6n+2 layers.
    'resnet20': cifar_net(n=3, residual=True),
    'resnet32': cifar_net(n=5, residual=True),
    'resnet44': cifar_net(n=7, residual=True),
    'resnet56': cifar_net(n=9, residual=True),
    'resnet110': cifar_net(n=18, residual=True),
    'resnet1202': cifar_net(n=200, residual=True),
    'plain20': cifar_net(n=3, residual=False),
    'plain32': cifar_net(n=5, residual=False),
    'plain44': cifar_net(n=7, residual=False),
    'plain56': cifar_net(n=9, residual=False),
    'plain110': cifar_net(n=18, residual=False),
    # ImageNet, Table 1.
    'resnet18': imagenet_net((2, 2, 2, 2), BasicBlock, residual=True),
    'resnet34': imagenet_net((3, 4, 6, 3), BasicBlock, residual=True),
    'resnet50': imagenet_net((3, 4, 6, 3), BottleneckBlock, residual=True),
    'resnet101': imagenet_net((3, 4, 23, 3), BottleneckBlock, residual=True),
    'resnet152': imagenet_net((3, 8, 36, 3), BottleneckBlock, residual=True),
    'plain18': imagenet_net((2, 2, 2, 2), BasicBlock, residual=False),
    'plain34': imagenet_net((3, 4, 6, 3), BasicBlock, residual=False),
}
MODEL_NAMES = tuple(MODEL_SPECS)


def model_family(name: str) -> str:
  """'cifar' or 'imagenet': the stem, and so the input resolution, a named model is built for."""
  return _spec(name)['stem']


def _spec(name: str) -> dict:
  if name not in MODEL_SPECS:
    raise ValueError(f'Unknown model {name!r}. Valid names: {", ".join(MODEL_NAMES)}.')
  return MODEL_SPECS[name]


def create_model(name: str, num_classes: int, **overrides) -> ResNet:
  """Returns the named network, e.g. ``create_model('resnet56', 10, dtype=jnp.bfloat16)``.

  ``overrides`` replace any ``ResNet`` attribute (``shortcut='B'``, ``bn_momentum=0.99``, ...).
  """
  spec = dict(_spec(name), num_classes=num_classes)
  unknown = set(overrides) - set(ResNet.__dataclass_fields__) - {'parent', 'name'}
  if unknown:
    raise ValueError(f'Unknown model argument(s) {sorted(unknown)} for {name!r}.')
  spec.update(overrides)
  if isinstance(spec.get('dtype'), str):
    spec['dtype'] = jnp.dtype(spec['dtype'])
  return ResNet(**spec)


# --------------------------------------------------------------------------------------------
# From a config's ``model`` section.
# --------------------------------------------------------------------------------------------

COMPUTE_DTYPES = ('float32', 'bfloat16')


def from_config(model_config, num_classes: int) -> ResNet:
  """The network a config's ``model`` section describes (None fields keep the zoo's value)."""
  overrides = {k: v for k, v in model_config.items() if k != 'name' and v is not None}
  return create_model(model_config.name, num_classes, **overrides)


def config_problems(model_config, per_device_batch: int) -> list[str]:
  """What keeps a config's ``model`` section from building a network that trains on
  ``per_device_batch`` examples per device."""
  problems = []
  if model_config.name not in MODEL_SPECS:
    problems.append(f'model.name={model_config.name!r} is not a model. Valid names: '
                    f'{", ".join(MODEL_NAMES)}.')
  if model_config.shortcut not in (None, *SHORTCUT_OPTIONS):
    problems.append(f'model.shortcut={model_config.shortcut!r}; use A, B or C (or None for the '
                    'family default).')
  if model_config.bottleneck_stride_on not in BOTTLENECK_STRIDE_ON:
    problems.append(f'model.bottleneck_stride_on={model_config.bottleneck_stride_on!r}; use '
                    "'1x1' or '3x3'.")
  if model_config.dtype not in COMPUTE_DTYPES:
    problems.append(f"model.dtype={model_config.dtype!r}; use 'float32' or 'bfloat16'.")
  group = model_config.bn_group_size
  if group < 0 or (group and per_device_batch % group):
    problems.append(f'model.bn_group_size={group} must divide the per-device batch '
                    f'{per_device_batch} (or be 0 for global statistics).')
  return problems
