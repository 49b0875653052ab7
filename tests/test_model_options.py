"""The units and options after the paper, each against what it must do: a pre-activation unit's
identity path, stochastic depth's schedule and its binomial drop counts, dropout, ResNet-D's
pooling (against PyTorch's), and the refusals of options that do not fit a net."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from configs import digits
from resnet_jax import models
from resnet_jax.errors import ConfigError
from resnet_jax.models import blocks
from tests.harness import plan_of

running_norm = functools.partial(nn.BatchNorm, use_running_average=True)


def preact_block(block, in_channels, width, strides=1, shortcut='B'):
  """A pre-activation unit of ``block``, its variables (every BatchNorm the identity: scale 1,
  bias 0, mean 0, var 1) and a random input of ``in_channels`` with negative values."""
  unit = block(width, strides, True, shortcut, models.conv_factory(jnp.float32), running_norm,
               running_norm, preact=True)
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, in_channels)) - 0.5
  variables = unit.init(jax.random.key(1), x)
  return unit, variables, x


def zero_last_conv(variables, unit):
  """The variables with the branch's last convolution zeroed: the branch outputs 0."""
  last = f'conv{len(unit.convs())}'
  params = dict(variables['params'])
  params[last] = {'kernel': jnp.zeros_like(params[last]['kernel'])}
  return {**variables, 'params': params}


@pytest.mark.parametrize('block, width', [(models.BasicBlock, 16), (models.BottleneckBlock, 4)])
def test_a_preactivation_unit_with_a_zero_branch_is_the_identity(block, width):
  unit, variables, x = preact_block(block, 16, width)
  out = unit.apply(zero_last_conv(variables, unit), x)
  np.testing.assert_array_equal(out, x)  # Negative values too: no ReLU after the addition.
  assert float(jnp.min(x)) < 0


def test_a_projection_takes_the_preactivated_input():
  unit, variables, x = preact_block(models.BasicBlock, 16, 32, strides=2)
  out = unit.apply(zero_last_conv(variables, unit), x)
  # With BatchNorm the identity (up to its epsilon), the shortcut is the 1x1 projection of
  # relu(x), strided, and has no BatchNorm of its own.
  preactivated = np.maximum(np.asarray(x) / np.sqrt(1 + 1e-5), 0)[:, ::2, ::2, :]
  kernel = np.asarray(variables['params']['shortcut']['proj_conv']['kernel'])[0, 0]
  np.testing.assert_allclose(out, preactivated @ kernel, rtol=1e-5, atol=1e-6)
  assert 'proj_bn' not in variables['params']['shortcut']


def test_drop_branch_zeroes_whole_examples_and_scales_the_rest():
  branch = jnp.ones((1000, 2, 2, 3))
  out = np.asarray(models.drop_branch(branch, 0.25, jax.random.key(0)))
  per_example = out.reshape(1000, -1)
  assert np.all(per_example == per_example[:, :1])  # One decision per example.
  assert set(np.unique(out)) == {0.0, np.float32(1 / 0.75)}


def recorded_drops(model, x, monkeypatch):
  """[(rate, dropped per example)] of every residual branch of one training pass, in order."""
  records, draw = [], blocks.drop_branch

  def recording(branch, rate, rng):
    out = draw(branch, rate, rng)
    dropped = jnp.all(out.reshape(out.shape[0], -1) == 0, axis=1)
    jax.debug.callback(lambda r, d: records.append((float(r), np.asarray(d))), rate, dropped)
    return out

  monkeypatch.setattr(blocks, 'drop_branch', recording)
  variables = model.init(jax.random.key(0), x[:1], train=False)
  jax.block_until_ready(model.apply(variables, x, train=True, mutable=['batch_stats'],
                                    rngs={'dropout': jax.random.key(1)}))
  return records


@pytest.mark.parametrize('scan_blocks', [False, True])
def test_stochastic_depth_drops_branches_at_rates_rising_linearly_with_depth(
    scan_blocks, monkeypatch):
  # 2 stages of 3 blocks: the l-th of 6 branches is dropped with probability 0.6 * l / 6.
  model = models.create_model('resnet20', 10, stage_sizes=(3, 3), widths=(4, 8),
                              drop_path_rate=0.6, scan_blocks=scan_blocks)
  examples = 2000
  x = jax.random.normal(jax.random.key(2), (examples, 4, 4, 3))
  records = recorded_drops(model, x, monkeypatch)
  expected = [0.6 * number / 6 for number in range(1, 7)]
  np.testing.assert_allclose([rate for rate, _ in records], expected, rtol=1e-6)
  for rate, dropped in records:
    # Binomial: the dropped fraction is within 4.5 standard deviations of the rate.
    assert abs(dropped.mean() - rate) < 4.5 * np.sqrt(rate * (1 - rate) / examples), rate
  # The blocks draw apart: their masks are not one mask repeated.
  assert len({dropped.tobytes() for _, dropped in records}) == len(records)


@pytest.mark.parametrize('name, field', [('preact_resnet164', 'drop_path_rate'),
                                         ('wrn16_8', 'dropout_rate')])
def test_evaluation_is_deterministic_and_equals_the_net_without_the_regulariser(name, field):
  small = dict(stage_sizes=(1, 2, 1), widths=(4, 8, 8))
  model = models.create_model(name, 10, **small, **{field: 0.5})
  plain = models.create_model(name, 10, **small)
  x = jax.random.normal(jax.random.key(3), (4, 8, 8, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  evaluated = model.apply(variables, x, train=False)
  np.testing.assert_array_equal(evaluated, plain.apply(variables, x, train=False))
  # Training draws: other keys, other outputs; the same key, the same output.
  train = lambda key: model.apply(variables, x, train=True, mutable=['batch_stats'],
                                  rngs={'dropout': jax.random.key(key)})[0]
  np.testing.assert_array_equal(train(1), train(1))
  assert not np.array_equal(train(1), train(2))


def test_dropout_sits_between_a_wide_units_convolutions():
  unit, variables, x = preact_block(models.BasicBlock, 8, 8)
  unit = unit.clone(dropout_rate=0.5, deterministic=False)
  captured = unit.apply(variables, x, rngs={'dropout': jax.random.key(0)},
                        capture_intermediates=True, mutable=['intermediates'])[1]
  dropped = np.asarray(captured['intermediates']['Dropout_0']['__call__'][0])
  activated = np.maximum(np.asarray(captured['intermediates']['bn2']['__call__'][0]), 0)
  # Of the activations entering the second convolution, half are zeroed, the others doubled.
  kept = dropped != 0
  np.testing.assert_allclose(dropped[kept], 2 * activated[kept], rtol=1e-6)
  assert 0.4 < np.mean(kept[activated > 0]) < 0.6
  assert 'Dropout_1' not in captured['intermediates']  # Only between the two convolutions.


@pytest.mark.parametrize('size', [7, 8])
def test_resnet_d_pooling_is_pytorchs_ceil_mode_average_pool(size):
  x = np.random.default_rng(0).standard_normal((2, size, size, 3)).astype(np.float32)
  pooled = models.layers.average_pool_2x2(jnp.asarray(x), 2)
  reference = torch.nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)(
      torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(pooled, reference, rtol=1e-6)


def test_a_config_asking_a_plain_net_for_stochastic_depth_is_refused_before_any_work():
  config = digits.get_config('plain20')
  config.model.drop_path_rate = 0.1
  with pytest.raises(ConfigError, match=r"model.drop_path_rate=0.1: stochastic depth drops "
                     r"residual branches, and a plain net has none \(model.name='plain20'\)"):
    plan_of(config, devices=1, processes=1)
  config.model.name = 'resnet20'
  plan_of(config, devices=1, processes=1)
