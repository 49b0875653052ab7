"""The paper's optimiser recipe, checked against hand computations."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl import flags
from ml_collections import config_flags

from configs import cifar10, default, imagenet_r50
from resnet_jax import optim


def schedule_values(config, steps, steps_per_epoch=100):
  schedule = optim.learning_rate_schedule(config, steps_per_epoch)
  return [float(schedule(jnp.asarray(s))) for s in steps]


def test_cifar_recipe_divides_by_ten_at_32k_and_48k():
  values = schedule_values(cifar10.get_config('resnet56'), [0, 31_999, 32_000, 47_999, 48_000,
                                                            63_999])
  np.testing.assert_allclose(values, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)


def test_resnet110_warms_up_at_0_01_for_400_iterations_then_follows_the_schedule():
  config = cifar10.get_config('resnet110')
  values = schedule_values(config, [0, 399, 400, 31_999, 32_000, 48_000])
  np.testing.assert_allclose(values, [0.01, 0.01, 0.1, 0.1, 0.01, 0.001], rtol=1e-6)


def config_from_command_line(*args):
  """The config ``main.py`` would train with, from its --config flags."""
  argv = ['main.py', *args]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  return flag_values.config


def test_warmup_follows_the_network_not_how_it_is_named():
  by_argument = config_from_command_line('--config=configs/cifar10.py:resnet110')
  by_override = config_from_command_line('--config=configs/cifar10.py',
                                         '--config.model.name=resnet110')
  steps = [0, 399, 400, 32_000]
  for config in (by_argument, by_override):
    np.testing.assert_allclose(schedule_values(config, steps), [0.01, 0.01, 0.1, 0.01],
                               rtol=1e-6)
  renamed_down = config_from_command_line('--config=configs/cifar10.py:resnet110',
                                          '--config.model.name=resnet56')
  np.testing.assert_allclose(schedule_values(renamed_down, steps), [0.1, 0.1, 0.1, 0.01],
                             rtol=1e-6)
  # An explicit value wins over the network's recipe.
  switched_off = config_from_command_line('--config=configs/cifar10.py:resnet1202',
                                          '--config.optimizer.warmup_steps=0')
  np.testing.assert_allclose(schedule_values(switched_off, steps), [0.1, 0.1, 0.1, 0.01],
                             rtol=1e-6)


def test_imagenet_boundaries_in_epochs_and_linear_scaling():
  config = imagenet_r50.get_config()
  config.batch_size = 1024  # 4x the reference batch of 256: lr 0.4.
  steps_per_epoch = 1_281_167 // 1024
  assert optim.boundaries_in_steps(config, steps_per_epoch) == [
      30 * steps_per_epoch, 60 * steps_per_epoch, 80 * steps_per_epoch]
  values = schedule_values(config, [0, 30 * steps_per_epoch - 1, 30 * steps_per_epoch,
                                    60 * steps_per_epoch, 80 * steps_per_epoch],
                           steps_per_epoch)
  np.testing.assert_allclose(values, [0.4, 0.4, 0.04, 0.004, 0.0004], rtol=1e-5)


def sgd_by_hand(params, grads_seq, lr, momentum, weight_decay, nesterov=False):
  """Caffe/PyTorch SGD: g += wd * w; v = m * v + g; w -= lr * v (Nesterov: w -= lr*(g + m*v))."""
  velocity = np.zeros_like(params)
  for grad in grads_seq:
    g = grad + weight_decay * params
    velocity = momentum * velocity + g
    params = params - lr * ((g + momentum * velocity) if nesterov else velocity)
  return params


@pytest.mark.parametrize('nesterov', [False, True])
def test_optimizer_matches_hand_sgd_with_momentum_and_weight_decay(nesterov):
  config = default.get_config()
  config.optimizer.nesterov = nesterov
  params = {'w': jnp.array([1.0, -2.0, 3.0])}
  grads = [np.array([0.5, 0.1, -0.3]), np.array([-0.2, 0.4, 0.0]), np.array([0.3, 0.3, 0.3])]
  tx, _ = optim.create_optimizer(config, steps_per_epoch=100)
  state, p = tx.init(params), params
  for g in grads:
    updates, state = tx.update({'w': jnp.asarray(g)}, state, p)
    p = optax.apply_updates(p, updates)
  expected = sgd_by_hand(np.array([1.0, -2.0, 3.0]), grads, 0.1, 0.9, 1e-4, nesterov)
  np.testing.assert_allclose(p['w'], expected, rtol=1e-6)


def test_weight_decay_on_kernels_only_skips_batchnorm_and_biases():
  config = default.get_config()
  config.optimizer.update(weight_decay_on='kernels', weight_decay=0.5, momentum=0.0)
  params = {'conv': {'kernel': jnp.ones(2)}, 'bn': {'scale': jnp.ones(2), 'bias': jnp.ones(2)}}
  tx, _ = optim.create_optimizer(config, steps_per_epoch=1)
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  np.testing.assert_allclose(updates['conv']['kernel'], -0.1 * 0.5 * 1.0)
  np.testing.assert_array_equal(updates['bn']['scale'], 0.0)
  np.testing.assert_array_equal(updates['bn']['bias'], 0.0)


def test_plateau_schedule_divides_by_ten_after_patience_evaluations_without_improvement():
  config = default.get_config()
  config.optimizer.update(schedule='plateau', plateau_patience=2, plateau_threshold=0.01,
                          momentum=0.0, weight_decay=0.0)
  params = {'w': jnp.zeros(())}
  tx, _ = optim.create_optimizer(config, steps_per_epoch=100)
  state = tx.init(params)
  update = jax.jit(lambda state, error: optim.plateau_update(config, 100, state, error))
  # By hand: best 0.5, then 0.4; 0.395 and 0.399 miss 0.4 - 0.01 twice: /10; 0.3 is a new best;
  # 0.31 and 0.305 miss 0.29 twice: /10 again. The lr steps (momentum 0) show the scale.
  errors = [0.5, 0.4, 0.395, 0.399, 0.3, 0.31, 0.305]
  expected = [1, 1, 1, 0.1, 0.1, 0.1, 0.01]
  for error, scale in zip(errors, expected):
    state = update(state, error)
    assert float(optim.learning_rate_scale(state)) == pytest.approx(scale, rel=1e-6)
    updates, _ = tx.update({'w': jnp.ones(())}, state, params)
    assert float(updates['w']) == pytest.approx(-0.1 * scale, rel=1e-6)
  # The schedule itself holds the base rate: no fixed boundaries.
  assert schedule_values(config, [0, 40_000]) == pytest.approx([0.1, 0.1])


def test_step_schedule_has_no_plateau_scale():
  config = default.get_config()
  tx, _ = optim.create_optimizer(config, steps_per_epoch=100)
  assert optim.learning_rate_scale(tx.init({'w': jnp.zeros(())})) == 1.0
