"""The XLA:CPU fusion barrier: the identity (values and gradients), applied from outside the
model to every block's input, and changing no output or gradient of a train step."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax import models
from resnet_jax.parallel import cpu_workarounds


def test_fusion_barrier_is_the_identity_with_an_identity_gradient():
  x = jax.random.normal(jax.random.key(7), (4, 5, 5, 3))
  np.testing.assert_array_equal(jax.jit(cpu_workarounds.fusion_barrier)(x), x)
  cotangent = jax.random.normal(jax.random.key(8), x.shape)
  _, vjp = jax.vjp(cpu_workarounds.fusion_barrier, x)
  np.testing.assert_array_equal(vjp(cotangent)[0], cotangent)


def _loss_and_grads(model, variables, x, labels):
  def loss(params):
    logits, stats = model.apply({**variables, 'params': params}, x, train=True,
                                mutable=['batch_stats'])
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(labels)), labels]), stats
  return jax.value_and_grad(loss, has_aux=True)(variables['params'])


@pytest.mark.parametrize('name', ['resnet20', 'plain20'])
def test_barriers_sit_on_every_block_input_and_change_no_output_or_gradient(name, monkeypatch):
  x = jax.random.normal(jax.random.key(6), (4, 32, 32, 3))
  labels = jnp.arange(4) % 10
  model = models.create_model(name, 10)
  variables = model.init(jax.random.key(0), x, train=False)
  step = functools.partial(_loss_and_grads, model)
  barred = cpu_workarounds.with_block_barriers(step)

  # One barrier per block: 3 stages of 3 in a 20-layer net.
  inputs = []
  barrier = cpu_workarounds.fusion_barrier
  monkeypatch.setattr(cpu_workarounds, 'fusion_barrier',
                      lambda y: inputs.append(y.shape) or barrier(y))
  forward = functools.partial(model.apply, train=True, mutable=['batch_stats'])
  jax.make_jaxpr(cpu_workarounds.with_block_barriers(forward))(variables, x)
  assert inputs == [(4, 32, 32, 16)] * 4 + [(4, 16, 16, 32)] * 3 + [(4, 8, 8, 64)] * 2
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-7),
               jax.jit(barred)(variables, x, labels), jax.jit(step)(variables, x, labels))
