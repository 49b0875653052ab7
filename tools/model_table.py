"""The model zoo's costs: every net's parameters and multiply-adds per image (docs/models.md).

    python -m tools.model_table            # every net of resnet_jax.models.MODEL_NAMES
    python -m tools.model_table --nets=resnet50,resnext50_32x4d

Parameters count the params collection (BatchNorm scale and bias, not its running statistics);
multiply-adds are those of every convolution and the classifier, each output position times its
kernel's size, at 32x32 for the CIFAR family (10 classes) and 224x224 for the ImageNet family
(1000 classes), as the papers count them. Nothing is compiled: shapes come from
``jax.eval_shape``.
"""

import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax.traverse_util import flatten_dict

from resnet_jax import models

FLAGS = flags.FLAGS
flags.DEFINE_list('nets', None, 'Names of resnet_jax.models; default: all of MODEL_NAMES.')


def image_size_and_classes(name: str) -> tuple[int, int]:
  return (32, 10) if models.model_family(name) == 'cifar' else (224, 1000)


def parameter_count(model: nn.Module, x) -> int:
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(variables['params']))


def multiply_adds(model: nn.Module, x) -> int:
  """Every conv and dense layer's output positions times its kernel's size, for the input ``x``
  (one image); ``model`` unrolled, so that every layer is a module whose output is captured."""
  def run():
    variables = model.init(jax.random.key(0), x, train=False)
    _, state = model.apply(
        variables, x, train=False, mutable=['intermediates'],
        capture_intermediates=lambda mdl, _: isinstance(mdl, (nn.Conv, nn.Dense)))
    return variables['params'], state['intermediates']
  params, intermediates = jax.eval_shape(run)
  params = flatten_dict(params)
  total = 0
  for path, (output,) in flatten_dict(intermediates).items():
    kernel = params[path[:-1] + ('kernel',)]
    positions = int(np.prod(output.shape[1:-1]))
    total += positions * int(np.prod(kernel.shape))
  return total


def row(name: str) -> str:
  size, classes = image_size_and_classes(name)
  model = models.create_model(name, classes, scan_blocks=False)
  x = jnp.zeros((1, size, size, 3), jnp.float32)
  return (f'| {name} | {size} | {parameter_count(model, x):,} | '
          f'{multiply_adds(model, x) / 1e9:.3g} G |')


def main(argv):
  del argv
  print('| net | input | parameters | multiply-adds |')
  print('|---|---|---|---|')
  names = FLAGS.nets or models.MODEL_NAMES
  for name in names:
    print(row(name), flush=True)
  print(f'Tabulated {len(names)} nets.', file=sys.stderr)  # Below the table, not in it.


if __name__ == '__main__':
  app.run(main)
