"""The XLA:CPU workarounds: the fusion barrier, the identity (values and gradients), applied from
outside the model to every block's input and changing no output or gradient of a train step; and
the convolution whose gradients XLA:CPU runs fast inside a loop, the same gradients bit for
bit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

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


@pytest.mark.parametrize('kernel, padding', [(3, ((1, 1), (1, 1))), (1, ((0, 0), (0, 0))),
                                             (3, ((0, 2), (2, 0)))])
def test_canonical_gradients_are_laxs_bit_for_bit_in_and_out_of_a_loop(kernel, padding):
  x = jax.random.normal(jax.random.key(0), (4, 9, 9, 6))
  kernels = jax.random.normal(jax.random.key(1), (2, kernel, kernel, 6, 6)) / kernel
  conv = lambda fn: lambda h, k: fn(h, k, (1, 1), padding, dimension_numbers=(
      lax.conv_dimension_numbers(h.shape, k.shape, ('NHWC', 'HWIO', 'NHWC'))))
  reference, canonical = conv(lax.conv_general_dilated), conv(
      cpu_workarounds.conv_with_canonical_gradients)

  def looped(fn):  # Two convolutions in a scan, as a scanned stage runs its blocks.
    return lambda ks, h: jnp.sum(jax.lax.scan(lambda c, k: (jnp.tanh(fn(c, k)), None), h,
                                              ks)[0] ** 2)

  def unrolled(fn):
    return lambda ks, h: jnp.sum(jnp.tanh(fn(jnp.tanh(fn(h, ks[0])), ks[1])) ** 2)

  want = jax.jit(jax.grad(unrolled(reference), (0, 1)))(kernels, x)
  for got in (jax.grad(looped(canonical), (0, 1)), jax.grad(unrolled(canonical), (0, 1))):
    jax.tree.map(np.testing.assert_array_equal, jax.jit(got)(kernels, x), want)


@pytest.mark.parametrize('strides, groups', [((2, 2), 1), ((1, 1), 2)])
def test_strided_and_grouped_convolutions_go_to_lax_as_they_are(strides, groups):
  x = jax.random.normal(jax.random.key(2), (2, 8, 8, 4))
  kernel = jax.random.normal(jax.random.key(3), (3, 3, 4 // groups, 4))
  numbers = lax.conv_dimension_numbers(x.shape, kernel.shape, ('NHWC', 'HWIO', 'NHWC'))
  conv = lambda fn: lambda h, k: fn(h, k, strides, ((1, 1), (1, 1)), dimension_numbers=numbers,
                                    feature_group_count=groups)
  canonical = conv(cpu_workarounds.conv_with_canonical_gradients)
  assert 'custom_vjp' not in str(jax.make_jaxpr(canonical)(x, kernel))
  np.testing.assert_array_equal(canonical(x, kernel), conv(lax.conv_general_dilated)(x, kernel))
