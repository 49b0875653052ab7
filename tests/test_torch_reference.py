"""The PyTorch reference computes the Flax models' function: an independent check of both.

With the Flax weights and BatchNorm statistics copied in, logits (eval mode and train mode),
the updated running statistics and the gradients must agree. Needs torch
(``pip install -r requirements-bench.txt``); without it this file fails, never skips.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

try:
  import torch
except ImportError as error:
  raise ImportError('tests/test_torch_reference.py needs PyTorch, the benchmark-only '
                    'dependency: pip install -r requirements-bench.txt') from error

from benchmarks import torch_resnet
from resnet_jax import models

CASES = {  # name: (model, input size); ImageNet nets with one block per stage, tiny inputs.
    'resnet20_option_a': (models.create_model('resnet20', 10), 16),
    'plain20': (models.create_model('plain20', 10), 16),
    'resnet18_option_b': (models.create_model('resnet18', 10, stage_sizes=(1, 1, 1, 1)), 32),
    'resnet18_option_c': (models.create_model('resnet18', 10, stage_sizes=(1, 1, 1, 1),
                                              shortcut='C'), 32),
    'resnet50_bottleneck': (models.create_model('resnet50', 10, stage_sizes=(1, 1, 1, 1)), 32),
    'resnet50_v1_5': (models.create_model('resnet50', 10, stage_sizes=(1, 1, 1, 1),
                                          bottleneck_stride_on='3x3'), 32),
}


def random_variables(model, size, seed=0):
  """Random weights (fan-in scaled kernels), BatchNorm scales, biases and running statistics."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)),
                                             train=False))
  rng = np.random.default_rng(seed)

  def sample(path, shape):
    name, shape = path[-1].key, shape.shape
    if name in ('scale', 'var'):
      value = rng.uniform(0.5, 1.5, shape)
    elif name in ('bias', 'mean'):
      value = rng.normal(0, 0.1, shape)
    else:
      value = rng.normal(0, 1 / np.sqrt(np.prod(shape[:-1])), shape)
    return value.astype(np.float32)

  return jax.tree_util.tree_map_with_path(sample, shapes)


def torch_twin(model, variables):
  return torch_resnet.load_flax_variables(torch_resnet.torch_model_like(model), variables)


def nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


@pytest.fixture(scope='module', params=sorted(CASES))
def case(request):
  model, size = CASES[request.param]
  variables = random_variables(model, size)
  x = np.random.default_rng(1).standard_normal((8, size, size, 3)).astype(np.float32)
  return model, variables, x


def test_eval_logits_match(case):
  model, variables, x = case
  expected = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  with torch.no_grad():
    logits = torch_twin(model, variables).eval()(nchw(x)).numpy()
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_train_logits_and_running_statistics_match(case):
  model, variables, x = case
  expected, updates = jax.jit(lambda v, x: model.apply(v, x, train=True,
                                                       mutable=['batch_stats']))(variables, x)
  net = torch_twin(model, variables).train()
  with torch.no_grad():
    logits = net(nchw(x)).numpy()
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
  state = net.state_dict()
  for key, value in torch_resnet.flax_to_torch_state(
      {'batch_stats': updates['batch_stats']}).items():
    np.testing.assert_allclose(state[key].numpy(), value.numpy(), rtol=1e-4, atol=1e-5,
                               err_msg=key)


def test_gradients_match():
  model, size = CASES['resnet20_option_a']
  variables = random_variables(model, size)
  x = np.random.default_rng(2).standard_normal((8, size, size, 3)).astype(np.float32)
  labels = np.arange(8) % 10

  def loss(params):
    logits, _ = model.apply({**variables, 'params': params}, x, train=True,
                            mutable=['batch_stats'])
    return -jnp.mean(jax.nn.log_softmax(logits)[np.arange(8), labels])

  expected = torch_resnet.flax_to_torch_state(jax.jit(jax.grad(loss))(variables['params']))
  net = torch_twin(model, variables).train()
  torch.nn.functional.cross_entropy(net(nchw(x)), torch.from_numpy(labels)).backward()
  grads = {k: p.grad.numpy() for k, p in net.named_parameters()}
  assert grads.keys() == expected.keys()
  for key, value in expected.items():
    np.testing.assert_allclose(grads[key], value.numpy(), rtol=1e-3, atol=1e-5, err_msg=key)
