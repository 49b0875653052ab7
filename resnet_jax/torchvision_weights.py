"""Weights in and out: torchvision's ResNet state dicts <-> this project's Flax variables.

torchvision's ``resnet18/34/50/101/152``, ``wide_resnet50_2/101_2`` and ``resnext50_32x4d``,
``resnext101_32x8d``, ``resnext101_64x4d`` are the project's ImageNet nets of those names with
shortcut option B and, for the bottleneck nets, the stride on the 3x3 convolution ("v1.5"):
``create_model(name, 1000, bottleneck_stride_on='3x3')``. The variables come in that net's
layout (a deep stage's blocks stacked, ``models.layouts``); either layout goes out.

    variables = convert.from_torchvision(torch.load('resnet50.pth'), 'resnet50')
    state_dict = convert.to_torchvision(variables, 'resnet50')  # numpy arrays

Every tensor is accounted for in both directions: a key that is missing, left over or of the
wrong shape is an error naming it. ``num_batches_tracked`` (one per BatchNorm in torchvision) is
read and dropped: it only matters for torch's cumulative-average BatchNorm (``momentum=None``),
which torchvision's nets do not use, and Flax keeps no such count; ``to_torchvision`` writes it as
0, so ``load_state_dict(strict=True)`` accepts the result. Values may be numpy arrays or torch
tensors (anything ``np.asarray`` takes); this module imports torch only to read a ``.pth`` file
(``read_state_dict``).

Inputs: torchvision's nets take ``(x / 255 - mean) / std``, this project's ImageNet pipeline feeds
``x / 255 - mean`` (the same mean). ``input_std=TORCHVISION_INPUT_STD`` folds the division into
the stem convolution (bias-free, zero-padded, so the fold is exact up to rounding); without it
the conversion is a pure relabelling and round-trips bit for bit.
"""

import functools
import re
from collections.abc import Mapping, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax import errors, models
from resnet_jax.data import registry

TORCHVISION_NAMES = ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152',
                     'wide_resnet50_2', 'wide_resnet101_2', 'resnext50_32x4d',
                     'resnext101_32x8d', 'resnext101_64x4d')
TORCHVISION_INPUT_STD = (0.229, 0.224, 0.225)
NUM_CLASSES = registry.get('imagenet2012').num_classes  # torchvision's ImageNet classifiers.
_UNTRACKED = 'num_batches_tracked'

# Flax leaf (collection, name) -> torch tensor name.
_LEAVES = {('params', 'kernel'): 'weight', ('params', 'scale'): 'weight',
           ('params', 'bias'): 'bias', ('batch_stats', 'mean'): 'running_mean',
           ('batch_stats', 'var'): 'running_var'}
_BLOCK = re.compile(r'stage(\d+)_block(\d+)')
_SHORTCUT = {'proj_conv': 'downsample.0', 'proj_bn': 'downsample.1'}


def create_model(name: str) -> models.ResNet:
  """The Flax net whose variables torchvision's ``name`` converts to."""
  _check_name(name)
  return models.create_model(name, NUM_CLASSES, bottleneck_stride_on='3x3')


def _check_name(name):
  if name not in TORCHVISION_NAMES:
    raise ValueError(f'{name!r} has no torchvision counterpart; use one of '
                     f'{", ".join(TORCHVISION_NAMES)}.')


def _torch_module(path: Sequence[str]) -> str:
  """('stage2_block1', 'shortcut', 'proj_bn') -> 'layer2.0.downsample.1'; stem -> conv1 / bn1."""
  parts = []
  for part in path:
    block = _BLOCK.fullmatch(part)
    if block:
      parts += [f'layer{block[1]}', str(int(block[2]) - 1)]
    elif part != 'shortcut':
      parts.append({'stem_conv': 'conv1', 'stem_bn': 'bn1'}.get(part, _SHORTCUT.get(part, part)))
  return '.'.join(parts)


@functools.cache
def _layout(name: str) -> dict:
  """{torch key: (Flax (collection, *path), Flax shape)} for every tensor of ``name``."""
  shapes = models.unrolled(jax.eval_shape(lambda: create_model(name).init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)))
  layout = {}
  for path, leaf in flax.traverse_util.flatten_dict(flax.core.unfreeze(shapes)).items():
    collection, *modules, leaf_name = path
    key = f'{_torch_module(modules)}.{_LEAVES[collection, leaf_name]}'
    layout[key] = (path, tuple(leaf.shape))
  return layout


def _batchnorm_modules(layout) -> list[str]:
  return [key.removesuffix('.running_mean') for key in layout if key.endswith('.running_mean')]


def _untracked(layout) -> set[str]:
  return {f'{module}.{_UNTRACKED}' for module in _batchnorm_modules(layout)}


# Flax -> torch axis order by rank: HWIO conv kernels -> OIHW, IO dense kernels -> OI.
_TORCH_AXES = {4: (3, 2, 0, 1), 2: (1, 0), 1: (0,)}
_FLAX_AXES = {4: (2, 3, 1, 0), 2: (1, 0), 1: (0,)}


def _torch_shape(flax_shape) -> tuple:
  return tuple(flax_shape[axis] for axis in _TORCH_AXES[len(flax_shape)])


def _check_keys(given, expected, optional, what: str, hint: str = '') -> None:
  missing = sorted(expected - given)
  unused = sorted(given - expected - optional)
  if missing or unused:
    problems = []
    if missing:
      problems.append(f'missing {len(missing)}: {errors.listed(missing)}')
    if unused:
      problems.append(f'not part of the net {len(unused)}: {errors.listed(unused)}')
    if unused and all(k.startswith('module.') for k in unused):
      hint = (" The keys start with 'module.' (a DataParallel wrapper): strip that prefix "
              'first.')
    raise ValueError(f'{what} does not match: ' + '; '.join(problems) + '.' + hint)


def _other_net(keys) -> str:
  """' These are the keys of torchvision's X.' when they are, else ''."""
  for name in TORCHVISION_NAMES:
    if set(_layout(name)) <= keys <= set(_layout(name)) | _untracked(_layout(name)):
      return f" These are the keys of torchvision's {name}."
  return ''


def _stem_input_scale(input_std: Sequence[float] | None) -> np.ndarray | None:
  if input_std is None:
    return None
  std = np.asarray(input_std, np.float32)
  if std.shape != (3,) or not np.all(std > 0):
    raise ValueError(f'input_std={input_std!r} must be three positive numbers (R, G, B).')
  return std


def from_torchvision(state_dict: Mapping, name: str,
                     input_std: Sequence[float] | None = None) -> dict:
  """``{'params', 'batch_stats'}`` (numpy float32) of ``create_model(name)`` from torchvision's.

  ``input_std``: divide the stem kernel's input channels by it, so that the net takes
  ``x - mean`` where torchvision's took ``(x - mean) / std`` (``TORCHVISION_INPUT_STD``).
  """
  _check_name(name)
  layout = _layout(name)
  keys = set(state_dict)
  if not set(layout) <= keys <= set(layout) | _untracked(layout):
    _check_keys(keys, set(layout), _untracked(layout), f'The state dict for torchvision {name}',
                _other_net(keys))
  flat = {}
  for key, (path, shape) in layout.items():
    value = np.asarray(state_dict[key], dtype=np.float32)
    if value.shape != _torch_shape(shape):
      raise ValueError(f'{key} has shape {value.shape}; torchvision {name} has '
                       f'{_torch_shape(shape)}.')
    flat[path] = np.ascontiguousarray(value.transpose(_FLAX_AXES[value.ndim]))
  std = _stem_input_scale(input_std)
  if std is not None:
    stem = ('params', 'stem_conv', 'kernel')
    flat[stem] = flat[stem] / std[:, None]
  return models.to_layout(flax.traverse_util.unflatten_dict(flat),
                          create_model(name).stacked_stages())


def to_torchvision(variables: Mapping, name: str,
                   input_std: Sequence[float] | None = None) -> dict[str, np.ndarray]:
  """torchvision's ``name`` state dict (numpy; float32, ``num_batches_tracked`` int64 0).

  ``input_std``: the inverse of ``from_torchvision``'s fold (multiplies the stem kernel back).
  """
  _check_name(name)
  layout = _layout(name)
  flat = flax.traverse_util.flatten_dict(models.unrolled(
      {c: flax.core.unfreeze(variables[c]) for c in ('params', 'batch_stats') if c in variables}))
  by_path = {'/'.join(path): key for key, (path, _) in layout.items()}
  given = {'/'.join(path) for path in flat} | {c for c in variables
                                               if c not in ('params', 'batch_stats')}
  _check_keys(given, set(by_path), set(), f'The variables of {name}')
  std = _stem_input_scale(input_std)
  state = {}
  for key, (path, shape) in layout.items():
    value = np.asarray(flat[path], dtype=np.float32)
    if value.shape != shape:
      raise ValueError(f'{"/".join(path)} has shape {value.shape}; {name} has {shape}.')
    if std is not None and path == ('params', 'stem_conv', 'kernel'):
      value = value * std[:, None]
    state[key] = np.ascontiguousarray(value.transpose(_TORCH_AXES[value.ndim]))
  for module in _batchnorm_modules(layout):
    state[f'{module}.{_UNTRACKED}'] = np.array(0, np.int64)
  return state


# How torch.load(weights_only=True) names an object it does not rebuild: 'GLOBAL posix.system'.
_REFUSED_GLOBAL = re.compile(r'GLOBAL (\S+)')


def _torch(path: str):
  """The torch module, to read ``path``; ``ValueError`` where it is not installed."""
  try:
    import torch  # pylint: disable=import-outside-toplevel  (only for .pth files)
  except ImportError as error:
    raise ValueError(f'Reading {path} needs torch (pip install -r requirements-bench.txt), '
                     'or save the state dict as .npz.') from error
  return torch


def _unreadable(path: str, error: Exception) -> str:
  """Why ``path`` is not read, and what to give instead (never to read it unsafely)."""
  refused = _REFUSED_GLOBAL.search(str(error))
  if refused or 'Object arrays' in str(error):  # numpy's words for pickled objects
    what = refused[1] if refused else 'an object array'
    return (f'{path} holds Python objects ({what}), not tensors alone, and is not read: '
            'rebuilding them can run any code, and a state dict needs none. Give a file of '
            "tensors alone: torchvision's published weights, a model's state_dict() saved with "
            'torch.save, or an .npz of the same keys.')
  if isinstance(error, FileNotFoundError):
    return f'{path} does not exist; give the path of a state dict (.pth, .pt or .npz).'
  return (f'{path} cannot be read as a state dict ({type(error).__name__}): it is damaged, cut '
          'short or not a weights file (an error page saved by a failed download, say). Download '
          'or save it again.')


def read_state_dict(path: str) -> dict:
  """The tensors of a torchvision checkpoint: a ``torch.save``'d state dict, or an ``.npz`` of
  the same keys. A file that is neither, or holds other objects (never rebuilt, so nothing in it
  runs), is a ``DataError`` that names it and says what to give instead."""
  torch = None if path.endswith('.npz') else _torch(path)
  try:
    if torch is None:
      with np.load(path) as data:  # allow_pickle=False: object arrays are refused, not unpickled.
        state = dict(data)
    else:
      state = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as error:  # pylint: disable=broad-except  (torch and numpy raise many kinds)
    raise errors.DataError(_unreadable(path, error)) from None
  if not isinstance(state, dict):
    raise errors.DataError(
        f'{path} holds a {type(state).__name__}, not a state dict; save model.state_dict().')
  return state
