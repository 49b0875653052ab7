"""The model zoo: every named net as a set of ``ResNet`` attributes, one line each.

The paper's nets (Sec. 4.2 and Table 1), and those that followed it: pre-activation ResNets (He
et al. 2016, "Identity Mappings in Deep Residual Networks"; the reference code's layout), wide
ResNets (Zagoruyko & Komodakis 2016; ``wrn{depth}_{k}`` for any depth 6n + 4), ResNeXt (Xie et
al. 2017) and ResNet-D (He et al. 2019, "Bag of Tricks"). Where torchvision or timm has the net,
the name and the layout are theirs (docs/models.md).
"""

import re
from collections.abc import Mapping, Sequence

import jax.numpy as jnp

from resnet_jax.models.blocks import BasicBlock, BottleneckBlock
from resnet_jax.models.layers import ModuleDef
from resnet_jax.models.resnet import BOTTLENECK_STRIDE_ON, SHORTCUT_OPTIONS, ResNet


def cifar_net(n: int, residual: bool = True) -> dict:
  """The 6n+2-layer CIFAR-10 net: 3 stages of n basic blocks of width 16, 32, 64; option A."""
  return dict(stage_sizes=(n, n, n), block=BasicBlock, widths=(16, 32, 64), stem='cifar',
              residual=residual, shortcut='A')


def cifar_bottleneck_net(n: int, preact: bool) -> dict:
  """The 9n+2-layer CIFAR net of "Identity Mappings" (Sec. 4.2; ResNet-164: n = 18, -1001:
  n = 111): 3 stages of n bottleneck blocks of width 16, 32, 64 (outputs 64, 128, 256), strided
  on the first 1x1, projection shortcuts where the shape changes."""
  return dict(cifar_net(n), block=BottleneckBlock, shortcut='B', preact=preact)


def wide_cifar_net(depth: int, k: int) -> dict:
  """WRN-depth-k: (depth - 4) / 6 pre-activation basic blocks per stage of width 16k, 32k,
  64k after a 16-filter stem; projection shortcuts where the width changes."""
  return dict(cifar_net((depth - 4) // 6), widths=(16 * k, 32 * k, 64 * k), stem_width=16,
              shortcut='B', preact=True)


def imagenet_net(stage_sizes: Sequence[int], block: ModuleDef, residual: bool = True,
                 **fields) -> dict:
  """An ImageNet net of Table 1: four stages of width 64, 128, 256, 512; option B."""
  return dict(stage_sizes=tuple(stage_sizes), block=block, widths=(64, 128, 256, 512),
              stem='imagenet', residual=residual, shortcut='B', **fields)


R18, R34, R50, R101, R152, R200 = ((2, 2, 2, 2), (3, 4, 6, 3), (3, 4, 6, 3), (3, 4, 23, 3),
                                   (3, 8, 36, 3), (3, 24, 36, 3))
# torchvision's, timm's and fb.resnet.torch's bottlenecks stride their 3x3 convolution.
V1_5 = dict(bottleneck_stride_on='3x3')

# Every named network, one line each.
MODEL_SPECS = {
    # CIFAR-10, 6n+2 layers (the paper, Sec. 4.2).
    'resnet20': cifar_net(n=3),
    'resnet32': cifar_net(n=5),
    'resnet44': cifar_net(n=7),
    'resnet56': cifar_net(n=9),
    'resnet110': cifar_net(n=18),
    'resnet1202': cifar_net(n=200),
    'plain20': cifar_net(n=3, residual=False),
    'plain32': cifar_net(n=5, residual=False),
    'plain44': cifar_net(n=7, residual=False),
    'plain56': cifar_net(n=9, residual=False),
    'plain110': cifar_net(n=18, residual=False),
    # "Identity Mappings", Table 3: the original and the pre-activation units at 110, 164 and
    # 1001 layers.
    'resnet164': cifar_bottleneck_net(n=18, preact=False),
    'resnet1001': cifar_bottleneck_net(n=111, preact=False),
    'preact_resnet110': dict(cifar_net(n=18), preact=True),
    'preact_resnet164': cifar_bottleneck_net(n=18, preact=True),
    'preact_resnet1001': cifar_bottleneck_net(n=111, preact=True),
    # Wide ResNets, their Table 4 (any wrn{depth}_{k} is built by name).
    'wrn16_8': wide_cifar_net(16, 8),
    'wrn28_10': wide_cifar_net(28, 10),
    'wrn40_4': wide_cifar_net(40, 4),
    # ImageNet, Table 1.
    'resnet18': imagenet_net(R18, BasicBlock),
    'resnet34': imagenet_net(R34, BasicBlock),
    'resnet50': imagenet_net(R50, BottleneckBlock),
    'resnet101': imagenet_net(R101, BottleneckBlock),
    'resnet152': imagenet_net(R152, BottleneckBlock),
    'plain18': imagenet_net(R18, BasicBlock, residual=False),
    'plain34': imagenet_net(R34, BasicBlock, residual=False),
    # Pre-activation, as fb.resnet.torch's preresnet.lua (the paper's ImageNet code).
    'preact_resnet18': imagenet_net(R18, BasicBlock, preact=True, **V1_5),
    'preact_resnet34': imagenet_net(R34, BasicBlock, preact=True, **V1_5),
    'preact_resnet50': imagenet_net(R50, BottleneckBlock, preact=True, **V1_5),
    'preact_resnet101': imagenet_net(R101, BottleneckBlock, preact=True, **V1_5),
    'preact_resnet152': imagenet_net(R152, BottleneckBlock, preact=True, **V1_5),
    'preact_resnet200': imagenet_net(R200, BottleneckBlock, preact=True, **V1_5),
    # torchvision's wide ResNets and ResNeXts.
    'wide_resnet50_2': imagenet_net(R50, BottleneckBlock, base_width=128, **V1_5),
    'wide_resnet101_2': imagenet_net(R101, BottleneckBlock, base_width=128, **V1_5),
    'resnext50_32x4d': imagenet_net(R50, BottleneckBlock, groups=32, base_width=4, **V1_5),
    'resnext101_32x8d': imagenet_net(R101, BottleneckBlock, groups=32, base_width=8, **V1_5),
    'resnext101_64x4d': imagenet_net(R101, BottleneckBlock, groups=64, base_width=4, **V1_5),
    # timm's ResNet-50-D: deep stem, average-pool shortcut, stride on the 3x3.
    'resnet50d': imagenet_net(R50, BottleneckBlock, deep_stem=True, avg_down=True, **V1_5),
}
MODEL_NAMES = tuple(MODEL_SPECS)
_WIDE = re.compile(r'wrn(\d+)_(\d+)')


def _wide_depth_and_k(name: str) -> tuple[int, int] | None:
  match = _WIDE.fullmatch(name)
  if not match:
    return None
  depth, k = int(match[1]), int(match[2])
  return (depth, k) if depth >= 10 and (depth - 4) % 6 == 0 and k >= 1 else None


def is_model_name(name: str) -> bool:
  """Whether ``name`` is a net of the zoo: one of ``MODEL_NAMES`` or ``wrn{6n+4}_{k}``."""
  return name in MODEL_SPECS or _wide_depth_and_k(name) is not None


def model_spec(name: str) -> dict:
  """The ``ResNet`` attributes of the named net (``ValueError`` listing the names if none)."""
  if name in MODEL_SPECS:
    return MODEL_SPECS[name]
  wide = _wide_depth_and_k(name)
  if wide is None:
    raise ValueError(f'Unknown model {name!r}. Valid names: {", ".join(MODEL_NAMES)}, and '
                     'wrn{depth}_{k} for any depth 6n + 4 >= 10 and widening factor k.')
  return wide_cifar_net(*wide)


def model_family(name: str) -> str:
  """'cifar' or 'imagenet': the stem, and so the input resolution, a named model is built for."""
  return model_spec(name)['stem']


def create_model(name: str, num_classes: int, **overrides) -> ResNet:
  """Returns the named network, e.g. ``create_model('resnet56', 10, dtype=jnp.bfloat16)``.

  ``overrides`` replace any ``ResNet`` attribute (``shortcut='B'``, ``bn_momentum=0.99``, ...).
  """
  spec = dict(model_spec(name), num_classes=num_classes)
  unknown = set(overrides) - set(ResNet.__dataclass_fields__) - {'parent', 'name'}
  if unknown:
    raise ValueError(f'Unknown model argument(s) {sorted(unknown)} for {name!r}.')
  spec.update(overrides)
  if isinstance(spec.get('dtype'), str):
    spec['dtype'] = jnp.dtype(spec['dtype'])
  return ResNet(**spec)


COMPUTE_DTYPES = ('float32', 'bfloat16')


def from_config(model_config: Mapping, num_classes: int) -> ResNet:
  """The network a config's ``model`` section describes (None fields keep the zoo's value)."""
  overrides = {k: v for k, v in model_config.items() if k != 'name' and v is not None}
  return create_model(model_config['name'], num_classes, **overrides)


def config_problems(model_config: Mapping, per_device_batch: int | None = None) -> list[str]:
  """What keeps a config's ``model`` section (its ``name`` and fields; None or absent: the net's
  own) from building a network that trains on ``per_device_batch`` examples per device: unknown
  names and options, and options that do not fit the net (stochastic depth on a plain net)."""
  problems = []
  name = model_config['name']
  if not is_model_name(name):
    problems.append(f'model.name={name!r} is not a model. Valid names: '
                    f'{", ".join(MODEL_NAMES)}, wrn{{6n+4}}_{{k}}.')
  if model_config.get('shortcut') not in (None, *SHORTCUT_OPTIONS):
    problems.append(f'model.shortcut={model_config["shortcut"]!r}; use A, B or C (or None for '
                    'the family default).')
  if model_config.get('bottleneck_stride_on') not in (None, *BOTTLENECK_STRIDE_ON):
    problems.append(f'model.bottleneck_stride_on={model_config["bottleneck_stride_on"]!r}; use '
                    "'1x1' or '3x3'.")
  if model_config.get('dtype') not in (None, *COMPUTE_DTYPES):
    problems.append(f"model.dtype={model_config['dtype']!r}; use 'float32' or 'bfloat16'.")
  group = model_config.get('bn_group_size') or 0
  if group < 0 or (group and per_device_batch and per_device_batch % group):
    problems.append(f'model.bn_group_size={group} must divide the per-device batch '
                    f'{per_device_batch} (or be 0 for global statistics).')
  if problems:
    return problems
  model = from_config(model_config, 1)
  return [f'model.{problem.rstrip(".")} (model.name={name!r}).'
          for problem in model.option_problems()]
