"""AdamW, LAMB, gradient clipping and the warm-up from 0 (resnet_jax/optim.py,
resnet_jax/learning_rate.py) against numpy and formulas written here, and their config checks."""

import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default, imagenet
from resnet_jax import errors, optim
from tests.harness import plan_of, rate_of

# A small tree: a kernel (decayed with weight_decay_on='kernels'), BatchNorm parameters (not).
PARAMS = {'conv': {'kernel': np.array([[0.5, -1.0], [2.0, 0.25]])},
          'bn': {'scale': np.array([1.0, 0.8]), 'bias': np.array([0.1, -0.3])}}
GRADS = [{'conv': {'kernel': np.array([[0.2, -0.1], [0.05, 0.4]])},
          'bn': {'scale': np.array([-0.3, 0.1]), 'bias': np.array([0.02, 0.5])}},
         {'conv': {'kernel': np.array([[-0.1, 0.3], [0.2, -0.2]])},
          'bn': {'scale': np.array([0.1, 0.1]), 'bias': np.array([-0.4, 0.2])}}]
LR, WD, B1, B2 = 0.01, 0.05, 0.9, 0.99


def adam_directions(grads_seq, eps):
  """Adam's bias-corrected m / (sqrt(v) + eps) of each step, per leaf name (Kingma and Ba)."""
  m = v = None
  for t, grads in enumerate(grads_seq, start=1):
    g = flat(grads)
    m = {k: (B1 * m[k] if m else 0) + (1 - B1) * g[k] for k in g}
    v = {k: (B2 * v[k] if v else 0) + (1 - B2) * g[k] ** 2 for k in g}
    yield {k: (m[k] / (1 - B1 ** t)) / (np.sqrt(v[k] / (1 - B2 ** t)) + eps) for k in g}


def flat(tree):
  return {f'{a}/{b}': np.asarray(x, np.float64) for a, sub in tree.items() for b, x in sub.items()}


def adamw_by_hand(decay_on, eps=1e-8):
  """PyTorch's AdamW: w -= lr * (adam direction + wd * w), the decay on the masked leaves."""
  w = flat(PARAMS)
  for direction in adam_directions(GRADS, eps):
    w = {k: w[k] - LR * (direction[k] + (WD * w[k] if decays(k, decay_on) else 0)) for k in w}
  return w


def lamb_by_hand(decay_on, eps=1e-6):
  """LAMB (You et al. 2020): u = adam direction + wd * w; w -= lr * ||w|| / ||u|| * u per tensor
  (a ratio of 1 where either norm is 0)."""
  w = flat(PARAMS)
  for direction in adam_directions(GRADS, eps):
    new = {}
    for k in w:
      u = direction[k] + (WD * w[k] if decays(k, decay_on) else 0)
      w_norm, u_norm = np.linalg.norm(w[k]), np.linalg.norm(u)
      ratio = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
      new[k] = w[k] - LR * ratio * u
    w = new
  return w


def decays(name, decay_on):
  return decay_on == 'all' or name.endswith('kernel')


def optimizer_of(**fields):
  config = default.get_config()
  config.optimizer.update(learning_rate=LR, weight_decay=WD, adam_b1=B1, adam_b2=B2, **fields)
  tx, _ = optim.create_optimizer(config.optimizer, rate_of(config, 100))
  return tx


def updated(tx):
  params = {k: {n: jnp.asarray(x, jnp.float32) for n, x in sub.items()}
            for k, sub in PARAMS.items()}
  state = tx.init(params)
  for grads in GRADS:
    updates, state = tx.update(jax_tree(grads), state, params)
    params = optax.apply_updates(params, updates)
  return flat(params)


def jax_tree(tree):
  return {k: {n: jnp.asarray(x, jnp.float32) for n, x in sub.items()} for k, sub in tree.items()}


def assert_same(got, want):
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-7, err_msg=k)


@pytest.mark.parametrize('decay_on', ['all', 'kernels'])
def test_two_adamw_updates_match_numpy(decay_on):
  got = updated(optimizer_of(name='adamw', weight_decay_on=decay_on))
  want = adamw_by_hand(decay_on)
  assert_same(got, want)
  # The mask matters: BatchNorm's parameters move by the decay or not.
  other = adamw_by_hand('kernels' if decay_on == 'all' else 'all')
  assert not np.allclose(other['bn/scale'], want['bn/scale'], rtol=1e-6, atol=0)


@pytest.mark.parametrize('decay_on', ['all', 'kernels'])
def test_two_lamb_updates_match_numpy(decay_on):
  got = updated(optimizer_of(name='lamb', weight_decay_on=decay_on))
  want = lamb_by_hand(decay_on)
  assert_same(got, want)


def test_adam_eps_and_betas_are_the_configs():
  got = updated(optimizer_of(name='adamw', adam_eps=0.1, weight_decay_on='all'))
  want = adamw_by_hand('all', eps=0.1)
  assert_same(got, want)


@pytest.mark.parametrize('name', ['sgd', 'adamw'])
def test_gradient_clipping_scales_the_global_norm_down_to_the_limit(name):
  """The update of gradients g with a clip of c is the unclipped optimizer's update of
  g * c / ||g|| (the norm over every leaf), and of g itself where ||g|| <= c."""
  norm = math.sqrt(sum((x ** 2).sum() for x in flat(GRADS[0]).values()))
  for clip in (0.5 * norm, 2 * norm):
    scale = min(1.0, clip / norm)
    clipped = optimizer_of(name=name, grad_clip_norm=clip)
    plain = optimizer_of(name=name)
    params = jax_tree(PARAMS)
    got, _ = clipped.update(jax_tree(GRADS[0]), clipped.init(params), params)
    scaled = {k: {n: x * scale for n, x in sub.items()} for k, sub in GRADS[0].items()}
    want, _ = plain.update(jax_tree(scaled), plain.init(params), params)
    assert_same(flat(got), flat(want))


def linear_warmup_then_cosine(step, peak, warmup, total):
  """torchvision's and timm's shape, per step: peak * t / W, then half a cosine to 0 at T."""
  if step < warmup:
    return peak * step / warmup
  return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


@pytest.mark.parametrize('fields, warmup', [({'linear_warmup_steps': 30}, 30),
                                            ({'linear_warmup_epochs': 2.5}, 25)])
def test_the_warmup_from_zero_follows_its_formula(fields, warmup):
  config = default.get_config()
  config.total_steps = 200
  config.optimizer.update(schedule='cosine', learning_rate=0.4, warmup_steps=0, **fields)
  rate = rate_of(config, steps_per_epoch=10)
  assert (rate.warmup, rate.warmup_steps) == ('linear', warmup)
  _, schedule = optim.create_optimizer(config.optimizer, rate)
  for step in (0, 1, warmup // 2, warmup - 1, warmup, warmup + 7, 150, 199):
    assert float(schedule(step)) == pytest.approx(
        linear_warmup_then_cosine(step, 0.4, warmup, 200), rel=1e-5, abs=1e-7), step
  assert float(schedule(0)) == 0.0


def test_the_warmup_from_zero_ramps_to_the_scaled_rate_then_steps_down():
  config = imagenet.get_config('resnet50')  # lr 0.1 x batch / 256, steps at 30, 60, 80 epochs.
  config.batch_size = 1024
  config.optimizer.update(scaling_warmup_epochs=0.0, linear_warmup_epochs=5.0)
  plan = plan_of(config, devices=8)
  _, schedule = optim.create_optimizer(config.optimizer, plan.learning_rate)
  warmup = 5 * plan.steps_per_epoch
  assert float(schedule(warmup // 2)) == pytest.approx(0.4 * (warmup // 2) / warmup, rel=1e-6)
  assert float(schedule(warmup)) == pytest.approx(0.4, rel=1e-6)
  assert float(schedule(31 * plan.steps_per_epoch)) == pytest.approx(0.04, rel=1e-6)


@pytest.mark.parametrize('overrides, message', [
    ({'optimizer.linear_warmup_epochs': 5.0},  # The ramp to the scaled rate is on as well.
     'Two warm-ups apply: the one from 0 of optimizer.linear_warmup_epochs=5.0 and the ramp'),
    ({'optimizer.scaling_warmup_epochs': 0.0, 'optimizer.linear_warmup_steps': 10,
      'optimizer.warmup_steps': 400}, 'the constant warm-up of optimizer.warmup_steps=400'),
    ({'optimizer.scaling_warmup_epochs': 0.0, 'optimizer.linear_warmup_steps': 10,
      'optimizer.linear_warmup_epochs': 1.0}, 'The warm-up from 0 is in steps or in epochs'),
    ({'optimizer.linear_warmup_steps': -1}, 'linear_warmup_steps=-1 and'),
    ({'optimizer.scaling_warmup_epochs': 0.0, 'optimizer.linear_warmup_epochs': 90.0},
     r'linear_warmup_epochs=90.0 must be shorter than the run \(total_epochs=90'),
    ({'optimizer.name': 'adamw', 'optimizer.adam_b2': 1.0}, 'adam_b2=1.0 .* must be in'),
    ({'optimizer.name': 'lamb', 'optimizer.adam_eps': 0.0}, 'adam_eps=0.0 must be positive'),
    ({'optimizer.grad_clip_norm': -1.0}, 'grad_clip_norm=-1.0 must be positive'),
    ({'optimizer.name': 'adam'}, "use one of 'sgd', 'lars', 'adamw', 'lamb'"),
])
def test_the_plan_refuses_bad_optimizer_fields_with_what_to_do(overrides, message):
  config = imagenet.get_config('resnet50')
  config.batch_size = 1024
  config.update_from_flattened_dict(overrides)
  with pytest.raises(errors.ConfigError, match=message):
    plan_of(config, devices=8)


@pytest.mark.parametrize('name', ['adamw', 'lamb'])
def test_adamw_and_lamb_plan_with_weight_decay_on_either(name):
  for decay_on in ('all', 'kernels'):
    config = imagenet.get_config('resnet50')
    config.optimizer.update(name=name, weight_decay_on=decay_on, grad_clip_norm=1.0)
    assert plan_of(config, devices=8).config.optimizer.name == name
