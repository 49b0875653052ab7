"""Deep Residual Learning (He et al., 2015) in JAX and Flax.

``resnet_jax.load_run(workdir)`` opens a training run (see ``resnet_jax.notebook``). The runs module
is imported on first use, so ``import resnet_jax.models`` stays light.
"""

import importlib

_RUNS_API = ('ExportedModel', 'Predictor', 'Run', 'load_exported', 'load_predictor', 'load_run')


def __getattr__(name):
  if name in _RUNS_API:
    return getattr(importlib.import_module('resnet_jax.notebook'), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted([*globals(), *_RUNS_API])
