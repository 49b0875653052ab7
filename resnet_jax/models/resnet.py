"""``ResNet``: a stem, stages of blocks, global average pooling and a classifier, in Flax Linen.

One parametrised module covers the paper's plain and residual nets and the ones that followed
it (pre-activation, wide, ResNeXt, ResNet-D, stochastic depth). The blocks of a stage after its
first are alike, so they may run as one ``nn.scan`` whose variables are stacked along a leading
axis (``stage3_blocks``) instead of one module each (``stage3_block2``, ``stage3_block3``, ...):
XLA then compiles one block per stage, not every block, and a 1000-layer net starts in seconds.
Both layouts compute the same function; ``layouts.to_layout`` converts variables between them.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from resnet_jax.models.blocks import Block
from resnet_jax.models.layers import GroupedBatchNorm, ModuleDef, conv_factory, symmetric_padding

SHORTCUT_OPTIONS = ('A', 'B', 'C')
BOTTLENECK_STRIDE_ON = ('1x1', '3x3')
STEMS = ('cifar', 'imagenet')
# The name of the final fully connected layer, the only module whose shapes follow the classes.
CLASSIFIER = 'fc'
# scan_blocks=None scans the stages of at least this many blocks (benchmarks/RESULTS.md, time
# to first step): below it, scanning saves little compile time and changes the initial values.
SCAN_MIN_BLOCKS = 12
# ResNet-C's deep stem (He et al. 2019, "Bag of Tricks"): three 3x3 convolutions, the first
# strided, instead of one 7x7.
DEEP_STEM_WIDTHS = (32, 32, 64)


class ResNet(nn.Module):
  """A plain or residual network: stem, stages of blocks, global average pool, classifier.

  Attributes:
    stage_sizes: blocks per stage; every stage after the first halves the map (stride 2).
    block: ``BasicBlock`` or ``BottleneckBlock``.
    widths: block width per stage (a bottleneck outputs 4x its width).
    stem: 'cifar' (3x3 conv, 16 filters) or 'imagenet' (7x7/2 conv, 64 filters, 3x3/2 max pool).
    stem_width: the CIFAR stem's filters; None: the first stage's width (16 in the paper).
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
    preact: pre-activation units (He et al. 2016): BN-ReLU before each convolution, nothing
      after the addition, projections without BatchNorm; the CIFAR stem is its convolution
      alone, and one BN-ReLU precedes the pool.
    groups, base_width: the bottleneck's 3x3 convolution has ``groups`` groups and
      ``width * base_width / 64 * groups`` channels (ResNeXt, wide ResNets; as torchvision).
    deep_stem: ResNet-C's stem, three 3x3 convolutions (ImageNet stem only).
    avg_down: ResNet-D's shortcut, 2x2 average pooling before a strided projection.
    dropout_rate: dropout before every convolution of a branch after its first (wide ResNets).
    drop_path_rate: stochastic depth: the last block's branch is dropped per example with this
      probability, the l-th of L blocks with ``l / L`` of it (Huang et al. 2016); residual
      nets only.
    scan_blocks: run the blocks of a stage after its first as one ``nn.scan`` (variables
      stacked); None: in the stages of at least ``SCAN_MIN_BLOCKS`` blocks.
    scan_conv: what computes the convolutions of scanned blocks (``lax.conv_general_dilated``'s
      signature; None: lax's own). Backends set it from outside the model
      (``parallel.cpu_workarounds``).
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
  stem_width: int | None = None
  preact: bool = False
  groups: int = 1
  base_width: int = 64
  deep_stem: bool = False
  avg_down: bool = False
  dropout_rate: float = 0.0
  drop_path_rate: float = 0.0
  scan_blocks: bool | None = None
  scan_conv: Callable | None = None

  def setup(self):
    problems = []
    if self.shortcut not in SHORTCUT_OPTIONS:
      problems.append(f'Unknown shortcut option {self.shortcut!r}; use one of '
                      f'{", ".join(SHORTCUT_OPTIONS)}.')
    if self.bottleneck_stride_on not in BOTTLENECK_STRIDE_ON:
      problems.append(f'bottleneck_stride_on={self.bottleneck_stride_on!r}; use one of '
                      f'{", ".join(BOTTLENECK_STRIDE_ON)}.')
    if self.stem not in STEMS:
      problems.append(f"Unknown stem {self.stem!r}; use 'cifar' or 'imagenet'.")
    problems += self.option_problems()
    if problems:
      raise ValueError(' '.join(problems))

  def option_problems(self) -> list[str]:
    """Options after the paper that do not fit this net, one sentence each, field first."""
    problems = []
    if self.deep_stem and self.stem != 'imagenet':
      problems.append('deep_stem=True replaces the ImageNet stem; the CIFAR stem is one 3x3 '
                      'convolution already.')
    if self.avg_down and self.shortcut == 'A':
      problems.append('avg_down=True pools before a projection shortcut, and option A has none '
                      '(use shortcut B or C).')
    for field in ('dropout_rate', 'drop_path_rate'):
      if not 0 <= getattr(self, field) < 1:
        problems.append(f'{field}={getattr(self, field)} must be in [0, 1).')
    if self.drop_path_rate and not self.residual:
      problems.append(f'drop_path_rate={self.drop_path_rate}: stochastic depth drops residual '
                      'branches, and a plain net has none.')
    return problems

  def scans(self, num_blocks: int) -> bool:
    """Whether a stage of ``num_blocks`` blocks runs the ones after its first as a scan."""
    if num_blocks < 2:
      return False
    return num_blocks >= SCAN_MIN_BLOCKS if self.scan_blocks is None else self.scan_blocks

  def stacked_stages(self) -> frozenset[str]:
    """The stages ('stage3', ...) whose blocks after the first have stacked variables."""
    return frozenset(f'stage{index}' for index, size in enumerate(self.stage_sizes, 1)
                     if self.scans(size))

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

  def _stem(self, x, conv, norm):
    """The stem's output and whether it ends in BN-ReLU."""
    if self.stem == 'cifar':
      x = conv(self.stem_width or self.widths[0], (3, 3), name='stem_conv')(x)
      if self.preact:  # The first unit's own BN-ReLU follows.
        return x, False
      return nn.relu(norm(name='stem_bn')(x)), True
    if self.deep_stem:
      for index, width in enumerate(DEEP_STEM_WIDTHS, 1):
        x = conv(width, (3, 3), strides=2 if index == 1 else 1, name=f'stem_conv{index}')(x)
        x = nn.relu(norm(name=f'stem_bn{index}')(x))
    else:
      x = conv(64, (7, 7), strides=2, name='stem_conv')(x)
      x = nn.relu(norm(name='stem_bn')(x))
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=symmetric_padding(3)), True

  @nn.compact
  def __call__(self, x, train: bool):
    conv = conv_factory(self.dtype)
    norm = self._norm(train)
    last_norm = (functools.partial(norm, scale_init=nn.initializers.zeros)
                 if self.zero_init_last_bn and self.residual else norm)

    x, activated = self._stem(x.astype(self.dtype), conv, norm)
    total = sum(self.stage_sizes)
    drop_rates = [self.drop_path_rate * number / total for number in range(1, total + 1)]
    first = 0
    for stage, (num_blocks, width) in enumerate(zip(self.stage_sizes, self.widths), 1):
      rates = drop_rates[first:first + num_blocks]
      first += num_blocks
      block = functools.partial(
          self.block, width=width, residual=self.residual, shortcut=self.shortcut, conv=conv,
          norm=norm, last_norm=last_norm, stride_on=self.bottleneck_stride_on,
          preact=self.preact, groups=self.groups, base_width=self.base_width,
          avg_down=self.avg_down, dropout_rate=self.dropout_rate,
          drop_path=bool(self.drop_path_rate), deterministic=not train)
      x = block(strides=1 if stage == 1 else 2, preactivate=not (stage == 1 and activated),
                name=f'stage{stage}_block1')(x, rates[0])
      if self.scans(num_blocks):
        x = scan_blocks(block(strides=1, conv=conv_factory(self.dtype, self.scan_conv),
                              name=f'stage{stage}_blocks'), x, rates[1:])
      else:
        for index in range(2, num_blocks + 1):
          x = block(strides=1, name=f'stage{stage}_block{index}')(x, rates[index - 1])

    if self.preact:
      x = nn.relu(norm(name='final_bn')(x))
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=jnp.float32, param_dtype=jnp.float32,
                    name=CLASSIFIER)(x)


def scan_blocks(block: Block, x, drop_rates: Sequence[float]):
  """``block`` applied ``len(drop_rates)`` times to ``x`` as one ``nn.scan``: its variables
  stacked along a leading axis, each step with its own rngs and stochastic-depth rate."""
  scan = nn.scan(lambda module, carry, rate: (module(carry, rate), None),
                 variable_axes={True: 0}, split_rngs={True: True}, length=len(drop_rates))
  x, _ = scan(block, x, jnp.asarray(drop_rates, jnp.float32))
  return x
