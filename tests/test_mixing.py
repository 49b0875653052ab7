"""Mixup and cutmix (resnet_jax/mixing.py) against facts counted here: targets that sum to 1,
cutmix's label weight against the pixels pasted, mixup's blend against numpy, the coefficients'
distribution against scipy's Beta, the draw's probabilities against binomial bounds, and the
train step's loss, errors and device-count independence."""

import functools
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from resnet_jax import events, losses, mixing, steps, train
from resnet_jax.parallel import sharding
from tests.harness import script_json, tiny_digits_config, tiny_step_inputs


def draws(mix, n, height=32, width=32, seed=0):
  """``n`` draws, as numpy arrays of length ``n``."""
  keys = jax.random.split(jax.random.key(seed), n)
  d = jax.jit(jax.vmap(lambda k: mixing.draw(k, mix, height, width)))(keys)
  return jax.tree.map(np.asarray, d)


def numbered_batch(batch_size=6, size=16, classes=10, smoothing=0.0):
  """Images whose every pixel is the example's number + 1, and their targets."""
  labels = np.arange(batch_size) % classes
  images = np.broadcast_to((np.arange(batch_size) + 1.0)[:, None, None, None],
                           (batch_size, size, size, 3)).astype(np.float32)
  return jnp.asarray(images), losses.targets(jnp.asarray(labels), classes, smoothing), labels


@pytest.mark.parametrize('mix', [mixing.Mixing(0.2, 0.0, 1.0, 0.5),
                                 mixing.Mixing(0.0, 1.0, 1.0, 0.5),
                                 mixing.Mixing(0.8, 1.0, 0.5, 0.5)])
def test_soft_targets_sum_to_one_and_weigh_the_example_and_its_neighbour(mix):
  images, targets, labels = numbered_batch(smoothing=0.1)
  for seed in range(20):
    _, mixed = mixing.mix(jax.random.key(seed), mix, images, targets)
    mixed = np.asarray(mixed)
    np.testing.assert_allclose(mixed.sum(-1), 1.0, rtol=1e-6)
    assert (mixed >= 0).all()
    # The same lam for every example: its own smoothed one-hot times lam, its neighbour's 1 - lam.
    lam = (mixed[0, labels[0]] - 0.01) / 0.9
    own = lam * (0.9 * np.eye(10)[labels] + 0.01)
    partner = (1 - lam) * (0.9 * np.eye(10)[np.roll(labels, 1)] + 0.01)
    np.testing.assert_allclose(mixed, own + partner, atol=1e-6)


def test_cutmix_label_weight_is_the_pasted_area_counted_on_the_pixels():
  mix = mixing.Mixing(0.0, 1.0, 1.0, 0.5)
  images, targets, labels = numbered_batch(size=24)
  areas = []
  for seed in range(40):
    mixed_images, mixed = mixing.mix(jax.random.key(seed), mix, images, targets)
    mixed_images, mixed = np.asarray(mixed_images), np.asarray(mixed)
    for i in range(len(labels)):
      partner = (i - 1) % len(labels)
      pasted = mixed_images[i, ..., 0] == partner + 1
      kept = mixed_images[i, ..., 0] == i + 1
      assert (pasted | kept).all()  # Every pixel is one image's or the other's, never a blend.
      rows, columns = np.nonzero(pasted.any(1))[0], np.nonzero(pasted.any(0))[0]
      if pasted.any():  # One rectangle: its bounding box is all pasted.
        assert pasted[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1].all()
      fraction = pasted.mean()
      np.testing.assert_allclose(mixed[i, labels[partner]], fraction, atol=1e-6)
      np.testing.assert_allclose(mixed[i, labels[i]], 1 - fraction, atol=1e-6)
    areas.append(fraction)
  assert 0 < min(areas) and max(areas) > 0.3  # Boxes of many sizes, some clipped at the border.


def test_mixup_blends_every_pixel_by_lam():
  mix = mixing.Mixing(0.4, 0.0, 1.0, 0.5)
  rng = np.random.default_rng(0)
  images = rng.standard_normal((5, 8, 8, 3)).astype(np.float32)
  labels = np.arange(5)
  mixed_images, mixed = mixing.mix(jax.random.key(3), mix, jnp.asarray(images),
                                   losses.targets(labels, 5))
  lam = float(mixed[0, 0])
  assert 0 < lam < 1
  np.testing.assert_allclose(mixed_images, lam * images + (1 - lam) * np.roll(images, 1, 0),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('alpha', [0.2, 1.0])
def test_mixup_coefficients_follow_beta_alpha_alpha(alpha):
  """Mean and variance within 5 standard errors of Beta(alpha, alpha)'s (a false alarm about
  once in 1.7 million), and a chi-square test of the counts in ten bins at the 0.1 % level
  (bins, not a Kolmogorov-Smirnov test: in float32 the draws within 2**-25 of 1 are 1, a step
  of 2 % at alpha 0.2 that a continuous test would see)."""
  n = 20_000
  lam = draws(mixing.Mixing(alpha, 0.0, 1.0, 0.5), n).lam.astype(np.float64)
  beta = stats.beta(alpha, alpha)
  mean, var = beta.mean(), beta.var()
  fourth = beta.expect(lambda x: (x - mean) ** 4)
  assert abs(lam.mean() - mean) < 5 * np.sqrt(var / n)
  assert abs(lam.var(ddof=1) - var) < 5 * np.sqrt((fourth - var ** 2) / n)
  edges = np.array([0, 1e-3, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 0.999, 1])
  counts = np.histogram(lam, edges)[0]
  assert stats.chisquare(counts, n * np.diff(beta.cdf(edges))).pvalue > 1e-3


def test_how_often_a_batch_is_mixed_and_by_which():
  n, prob, switch = 20_000, 0.6, 0.3
  d = draws(mixing.Mixing(0.2, 1.0, prob, switch), n)
  mixed = d.mixed
  assert (d.lam[~mixed] == 1).all()
  # Binomial frequencies within 5 standard deviations.
  assert abs(mixed.mean() - prob) < 5 * np.sqrt(prob * (1 - prob) / n)
  share = d.cutmix[mixed].mean()
  assert abs(share - switch) < 5 * np.sqrt(switch * (1 - switch) / mixed.sum())
  assert not d.cutmix[~mixed].any()
  # Cutmix's lam is the area left outside the box of its draw.
  area = (d.bottom - d.top) * (d.right - d.left) / 32 ** 2
  np.testing.assert_allclose(d.lam[d.cutmix], 1 - area[d.cutmix], atol=1e-6)


def test_the_draws_are_a_function_of_seed_and_step():
  mix = mixing.Mixing(1.0, 0.0, 1.0, 0.5)  # lam uniform: twenty draws, twenty values.
  draw = lambda seed, step: mixing.draw(mixing.step_key(jax.random.key(seed), step), mix, 32, 32)
  jax.tree.map(np.testing.assert_array_equal, draw(0, 5), draw(0, 5))
  lams = {float(draw(seed, step).lam) for seed in (0, 1) for step in range(10)}
  assert len(lams) == 20


def test_the_step_minimises_the_loss_of_the_mixed_batch_and_counts_errors_on_its_labels():
  model, _, state, batch = tiny_step_inputs(channels=3)
  tx = optax.sgd(0.0)
  mix, loss, rng = mixing.Mixing(0.0, 1.0, 1.0, 0.5), losses.Loss(), jax.random.key(4)
  _, metrics = jax.jit(functools.partial(
      steps.train_step, model=model, tx=tx, learning_rate_fn=lambda s: 0.0,
      mesh=sharding.create_mesh(), label_smoothing=0.1, loss=loss, mix=mix, rng=rng))(
          state, batch)
  # The same batch mixed here by the same draw, and the model applied to it.
  images, targets = mixing.mix(mixing.step_key(rng, 0), mix, batch['image'],
                               losses.targets(batch['label'], 10, 0.1))
  assert not np.allclose(images, batch['image'])
  logits, _ = model.apply(state.variables, images, train=True, mutable=['batch_stats'])
  values = metrics.compute()
  expected_loss = -(targets * jax.nn.log_softmax(logits)).sum(-1).mean()
  np.testing.assert_allclose(values['loss'], expected_loss, rtol=1e-5)
  # The errors: of the mixed images' logits against the batch's own labels.
  ranks = (np.asarray(logits) > np.take_along_axis(
      np.asarray(logits), np.asarray(batch['label'])[:, None], -1)).sum(-1)
  np.testing.assert_allclose(values['error_top1'], (ranks >= 1).mean(), atol=1e-6)
  np.testing.assert_allclose(values['error_top5'], (ranks >= 5).mean(), atol=1e-6)


def test_mixing_without_the_run_key_is_refused():
  model, tx, state, batch = tiny_step_inputs(channels=3)
  with pytest.raises(ValueError, match='pass rng'):
    steps.train_step(state, batch, model=model, tx=tx, learning_rate_fn=lambda s: 0.1,
                     mesh=sharding.create_mesh(), mix=mixing.Mixing(0.2, 0.0, 1.0, 0.5))


# One step at learning rate 0 of the same global batch on 1, 2 and 4 devices: the same loss.
DEVICES = textwrap.dedent('''
    import functools, json
    import jax, numpy as np, optax
    from resnet_jax import losses, mixing, models, steps
    from resnet_jax.parallel import sharding

    model = models.create_model('resnet20', 10, stage_sizes=(1, 1), widths=(4, 8))
    tx = optax.sgd(0.0)
    state = steps.init_train_state(model, tx, jax.random.key(0), (8, 8, 3))
    batch = {'image': np.random.default_rng(0).standard_normal((16, 8, 8, 3), np.float32),
             'label': np.arange(16, dtype=np.int32) % 10}
    losses_by_devices = {}
    for devices in (1, 2, 4):
      mesh = sharding.create_mesh(jax.devices()[:devices])
      step = jax.jit(functools.partial(
          steps.train_step, model=model, tx=tx, learning_rate_fn=lambda s: 0.0, mesh=mesh,
          loss=losses.Loss('binary_cross_entropy'), mix=mixing.Mixing(0.2, 1.0, 1.0, 0.5),
          rng=jax.random.key(3)))
      values = [float(step(state.replace(step=state.step + k),
                           sharding.to_global(batch, sharding.batch_sharding(mesh)))[1]
                      .compute()['loss']) for k in range(4)]
      losses_by_devices[devices] = values
    print(json.dumps(losses_by_devices))
''')


@pytest.mark.e2e
def test_the_mixed_batch_does_not_depend_on_the_number_of_devices():
  got = script_json(DEVICES, devices=4)
  assert len(set(np.round(got['1'], 5))) == 4  # Four steps, four draws.
  for devices in ('2', '4'):
    np.testing.assert_allclose(got[devices], got['1'], rtol=1e-5)


def test_a_few_steps_of_mixup_cutmix_bce_and_lamb_on_digits(data_dir, tmp_path):
  config = tiny_digits_config(data_dir, **{
      'mixup.mixup_alpha': 0.2, 'mixup.cutmix_alpha': 1.0, 'label_smoothing': 0.1,
      'loss': 'binary_cross_entropy', 'bce_target_threshold': 0.2, 'optimizer.name': 'lamb',
      'optimizer.learning_rate': 0.005, 'optimizer.weight_decay': 0.01,
      'optimizer.weight_decay_on': 'kernels', 'optimizer.grad_clip_norm': 1.0,
      'optimizer.linear_warmup_steps': 2})
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  scalars = events.read_scalars(workdir)
  # The rate logged at each step is the rate of its update: 0, 0.0025, then 0.005 until the
  # boundary at step 4 divides it by 10.
  steps_logged, rates = scalars['train_learning_rate']
  np.testing.assert_allclose(rates, [0.0, 0.0025, 0.005, 0.005, 0.0005], rtol=1e-6)
  # Binary cross-entropy averaged over the 10 classes: about log 2 for a fresh net's logits,
  # where the softmax cross-entropy would be about log 10.
  train_loss = scalars['train_loss'][1]
  assert np.isfinite(train_loss).all() and 0.3 < train_loss[0] < 1.2, train_loss
  assert events.read_results(workdir)[-1]['step'] == 5
