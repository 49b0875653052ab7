"""The paper's optimiser recipe, checked against hand computations."""

import functools
import inspect

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl import flags
from ml_collections import config_flags

from configs import cifar10, default, digits, imagenet_r50
from resnet_jax import learning_rate, losses, optim, steps, train
from tests.harness import plan_of, rate_of, tiny_step_inputs


def schedule_values(config, steps, steps_per_epoch=100):
  schedule = learning_rate.schedule(rate_of(config, steps_per_epoch))
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


def goyal_rate(step, batch, steps_per_epoch, base=0.1, reference=256, warmup_epochs=5,
               boundaries=(30, 60, 80)):
  """Goyal et al.'s rule for ImageNet: the rate k x base, k = batch / reference, reached from
  base by a constant increase each step over the first warmup_epochs, /10 at each boundary."""
  scaled, warmup = base * batch / reference, warmup_epochs * steps_per_epoch
  if step < warmup:
    return base + (scaled - base) * step / warmup
  return scaled * 0.1 ** sum(step >= b * steps_per_epoch for b in boundaries)


@pytest.mark.parametrize('batch', [1024, 8192])
def test_large_batches_warm_up_linearly_from_the_base_rate_then_decay_in_epochs(batch):
  config = imagenet_r50.get_config()
  config.batch_size = batch
  steps_per_epoch = 1_281_167 // batch
  warmup = 5 * steps_per_epoch
  assert list(rate_of(config, steps_per_epoch).boundaries) == [
      30 * steps_per_epoch, 60 * steps_per_epoch, 80 * steps_per_epoch]
  steps = [0, 1, warmup // 4, warmup // 2, warmup - 1, warmup, 30 * steps_per_epoch - 1,
           30 * steps_per_epoch, 60 * steps_per_epoch, 80 * steps_per_epoch,
           90 * steps_per_epoch - 1]
  values = schedule_values(config, steps, steps_per_epoch)
  np.testing.assert_allclose(values, [goyal_rate(s, batch, steps_per_epoch) for s in steps],
                             rtol=1e-5)
  assert values[0] == pytest.approx(0.1) and values[5] == pytest.approx(0.1 * batch / 256)


@pytest.mark.parametrize('batch, rate', [(256, 0.1), (128, 0.05)])
def test_no_warmup_at_or_below_the_reference_batch(batch, rate):
  config = imagenet_r50.get_config()
  config.batch_size = batch
  steps_per_epoch = 1_281_167 // batch
  np.testing.assert_allclose(schedule_values(config, [0, 1, 5 * steps_per_epoch,
                                                      30 * steps_per_epoch], steps_per_epoch),
                             [rate, rate, rate, rate / 10], rtol=1e-6)


def test_warmup_switched_off_starts_at_the_scaled_rate():
  config = imagenet_r50.get_config()
  config.batch_size = 1024
  config.optimizer.scaling_warmup_epochs = 0.0
  assert schedule_values(config, [0, 1], 1000) == pytest.approx([0.4, 0.4])


@pytest.mark.parametrize('schedule, formula', [
    ('cosine', lambda t, T, peak, end: end + (peak - end) * 0.5 * (1 + np.cos(np.pi * t / T))),
    ('polynomial', lambda t, T, peak, end: end + (peak - end) * (1 - t / T) ** 2),
])
def test_cosine_and_polynomial_decay_from_the_end_of_the_warmup_to_the_last_step(schedule,
                                                                                  formula):
  config = imagenet_r50.get_config()
  config.batch_size = 1024
  config.optimizer.update(schedule=schedule, end_learning_rate=1e-3, decay_power=2.0)
  steps_per_epoch = 10  # 50 warm-up steps of 900.
  warmup, total, peak = 50, 900, 0.4
  steps = [0, 25, 50, 51, 300, 475, 899, 900]
  expected = [0.1 + (peak - 0.1) * t / warmup if t < warmup else
              formula(t - warmup, total - warmup, peak, 1e-3) for t in steps]
  np.testing.assert_allclose(schedule_values(config, steps, steps_per_epoch), expected,
                             rtol=1e-5)


def test_the_plateau_scale_multiplies_the_warmup_ramp():
  config = imagenet_r50.get_config('plateau')
  config.batch_size = 1024
  config.optimizer.update(plateau_patience_epochs=1.0, momentum=0.0, weight_decay=0.0)
  steps_per_epoch = 2  # Warm-up 10 steps; an evaluation every 2 steps; patience 1 evaluation.
  tx, learning_rate_fn = optim.create_optimizer(config.optimizer,
                                                rate_of(config, steps_per_epoch))
  params = {'w': jnp.zeros(())}
  state = tx.init(params)
  update = jax.jit(lambda state, error: optim.plateau_update(rate_of(config, steps_per_epoch),
                                                             state, error))
  # Evaluations after steps 2 (best 0.5) and 4 (no better): /10 from step 4 on.
  for step in range(8):
    if step in (2, 4):
      state = update(state, 0.5)
    scale = 0.1 if step >= 4 else 1.0
    expected = (0.1 + 0.3 * step / 10) * scale  # By hand: 0.1 -> 0.4 over 10 steps.
    assert float(learning_rate_fn(step) * optim.learning_rate_scale(state)) == pytest.approx(
        expected, rel=1e-6)  # What the train step logs.
    updates, state = tx.update({'w': jnp.ones(())}, state, params)
    assert float(updates['w']) == pytest.approx(-expected, rel=1e-6)


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
  tx, _ = optim.create_optimizer(config.optimizer, rate_of(config, 100))
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
  tx, _ = optim.create_optimizer(config.optimizer, rate_of(config, 1))
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
  tx, _ = optim.create_optimizer(config.optimizer, rate_of(config, 100))
  state = tx.init(params)
  update = jax.jit(lambda state, error: optim.plateau_update(rate_of(config, 100), state, error))
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
  tx, _ = optim.create_optimizer(config.optimizer, rate_of(config, 100))
  assert optim.learning_rate_scale(tx.init({'w': jnp.zeros(())})) == 1.0


def lars_by_hand(params, grads_seq, lr, momentum, weight_decay, trust_coefficient):
  """You et al.'s Algorithm 1 per tensor: kernels take v = m v + lr x ratio x (g + wd w) with
  ratio = coeff ||w|| / (||g|| + wd ||w||); every other tensor v = m v + lr g; w -= v."""
  velocity = {k: np.zeros_like(w) for k, w in params.items()}
  for grads in grads_seq:
    for k, g in grads.items():
      w = params[k]
      if k.endswith('kernel'):
        w_norm, g_norm = np.linalg.norm(w.ravel()), np.linalg.norm(g.ravel())
        ratio = trust_coefficient * w_norm / (g_norm + weight_decay * w_norm)
        step = lr * ratio * (g + weight_decay * w)
      else:
        step = lr * g
      velocity[k] = momentum * velocity[k] + step
      params = {**params, k: w - velocity[k]}
  return params


def test_lars_adapts_and_decays_kernels_and_leaves_batchnorm_and_biases_to_momentum_sgd():
  config = default.get_config()
  # A large decay, so that ||g|| + wd ||w|| (You et al.) and ||g + wd w|| (optax.lars) differ.
  config.optimizer.update(name='lars', weight_decay_on='kernels', weight_decay=0.05,
                          lars_trust_coefficient=0.001, momentum=0.9)
  rng = np.random.default_rng(0)
  shapes = {'conv/kernel': (3, 3, 2, 4), 'bn/scale': (4,), 'bn/bias': (4,),
            'dense/kernel': (4, 3), 'dense/bias': (3,)}
  params = {k: rng.normal(size=shape).astype(np.float32) for k, shape in shapes.items()}
  grads_seq = [{k: rng.normal(size=shape).astype(np.float32) for k, shape in shapes.items()}
               for _ in range(2)]

  def unflatten(flat):
    return flax.traverse_util.unflatten_dict(
        {tuple(k.split('/')): jnp.asarray(v) for k, v in flat.items()})

  tx, _ = optim.create_optimizer(config.optimizer, rate_of(config, 100))
  state, p = tx.init(unflatten(params)), unflatten(params)
  for grads in grads_seq:
    updates, state = tx.update(unflatten(grads), state, p)
    p = optax.apply_updates(p, updates)
  expected = lars_by_hand(params, grads_seq, 0.1, 0.9, 0.05, 0.001)
  got = flax.traverse_util.flatten_dict(p, sep='/')
  for k in shapes:
    np.testing.assert_allclose(got[k], expected[k], rtol=1e-6, atol=1e-7, err_msg=k)
  # The kernels moved by far less than the plain SGD steps of the BatchNorm parameters.
  assert np.abs(got['conv/kernel'] - params['conv/kernel']).max() < 1e-3
  assert np.abs(got['bn/scale'] - params['bn/scale']).max() > 1e-2


def test_label_smoothing_loss_by_hand():
  logits = np.array([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]], np.float32)
  labels = np.array([0, 2])
  a, k = 0.1, 3
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  # Targets 1 - a + a/k on the label, a/k elsewhere.
  targets = np.full((2, k), a / k)
  targets[np.arange(2), labels] += 1 - a
  expected = -(targets * log_p).sum(-1)
  smoothed = lambda a: losses.Loss()(jnp.asarray(logits), losses.targets(labels, k, a))
  np.testing.assert_allclose(smoothed(a), expected, rtol=1e-6)
  np.testing.assert_allclose(smoothed(0.0), -log_p[np.arange(2), labels], rtol=1e-6)


def test_the_train_step_minimises_and_logs_the_smoothed_loss_of_the_config():
  config = digits.get_config()
  config.label_smoothing = 0.1
  program = train.build_program(plan_of(config))
  assert inspect.unwrap(program.train_step).keywords['label_smoothing'] == 0.1
  model, tx, state, batch = tiny_step_inputs(channels=1)
  x = batch['image']
  new_state, metrics = jax.jit(functools.partial(
      steps.train_step, model=model, tx=tx, learning_rate_fn=lambda s: 0.1,
      mesh=program.mesh, label_smoothing=0.1))(state, batch)

  def loss(params):
    logits, _ = model.apply({'params': params, 'batch_stats': state.batch_stats}, x,
                            train=True, mutable=['batch_stats'])
    return losses.Loss()(logits, losses.targets(batch['label'], 10, 0.1)).mean()

  value, grads = jax.value_and_grad(loss)(state.params)
  np.testing.assert_allclose(metrics.compute()['loss'], value, rtol=1e-5)
  jax.tree.map(lambda a, b, g: np.testing.assert_allclose(a, b - 0.1 * g, rtol=1e-5, atol=1e-6),
               new_state.params, state.params, grads)
