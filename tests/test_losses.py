"""The training losses (resnet_jax/losses.py) against hand computations, and their checks."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from configs import digits
from resnet_jax import errors, losses
from tests.harness import plan_of

LOGITS = np.array([[2.0, -1.0, 0.0], [0.5, 0.5, -3.0]], np.float32)


def bce(x, y):
  """-[y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))], written out."""
  p = 1 / (1 + math.exp(-x))
  return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_binary_cross_entropy_is_the_mean_over_classes_of_each_sigmoid_loss():
  targets = np.array([[0.7, 0.3, 0.0], [0.05, 0.9, 0.05]], np.float32)
  by_hand = [[bce(x, y) for x, y in zip(row, target)] for row, target in zip(LOGITS, targets)]
  got = losses.Loss('binary_cross_entropy')(jnp.asarray(LOGITS), jnp.asarray(targets))
  np.testing.assert_allclose(got, np.mean(by_hand, axis=1), rtol=1e-6)
  summed = losses.Loss('binary_cross_entropy', sum_classes=True)(jnp.asarray(LOGITS),
                                                                 jnp.asarray(targets))
  np.testing.assert_allclose(summed, np.sum(by_hand, axis=1), rtol=1e-6)


def test_the_target_threshold_makes_targets_above_it_one_and_the_others_zero():
  # Mixed and smoothed targets; with a threshold of 0.2, 0.7 and 0.3 become 1, 0.05 and 0 become 0.
  targets = np.array([[0.7, 0.3, 0.0], [0.05, 0.9, 0.05]], np.float32)
  hard = [[1, 1, 0], [0, 1, 0]]
  by_hand = [[bce(x, y) for x, y in zip(row, target)] for row, target in zip(LOGITS, hard)]
  got = losses.Loss('binary_cross_entropy', target_threshold=0.2)(jnp.asarray(LOGITS),
                                                                  jnp.asarray(targets))
  np.testing.assert_allclose(got, np.mean(by_hand, axis=1), rtol=1e-6)


def test_cross_entropy_of_soft_targets_by_hand():
  targets = np.array([[0.7, 0.3, 0.0], [0.05, 0.9, 0.05]], np.float32)
  log_p = [[x - math.log(sum(math.exp(v) for v in row)) for x in row] for row in LOGITS]
  by_hand = [-sum(y * lp for y, lp in zip(t, row)) for t, row in zip(targets, log_p)]
  np.testing.assert_allclose(losses.Loss()(jnp.asarray(LOGITS), jnp.asarray(targets)), by_hand,
                             rtol=1e-6)


def test_smoothed_targets_are_timms_on_and_off_values():
  a, k = 0.1, 4
  got = np.asarray(losses.targets(np.array([2, 0]), k, a))
  off, on = a / k, 1 - a + a / k
  np.testing.assert_allclose(got, [[off, off, on, off], [on, off, off, off]], rtol=1e-6)


@pytest.mark.parametrize('overrides, message', [
    ({'loss': 'focal'}, "loss='focal' is not a loss; use one of 'cross_entropy'"),
    ({'bce_target_threshold': 0.2}, 'set --config.loss=binary_cross_entropy'),
    ({'loss': 'binary_cross_entropy', 'bce_target_threshold': 1.0},
     r'bce_target_threshold=1.0 must be in \[0, 1\)'),
    ({'mixup.mixup_alpha': -0.2}, 'mixup.mixup_alpha=-0.2 and mixup.cutmix_alpha=0.0 must not be'),
    ({'mixup.switch_prob': 1.5}, r'mixup.switch_prob=1.5 is a probability: give one in \[0, 1\]'),
])
def test_the_plan_refuses_bad_loss_and_mixing_fields_with_what_to_do(overrides, message):
  config = digits.get_config()
  config.update_from_flattened_dict(overrides)
  with pytest.raises(errors.ConfigError, match=message):
    plan_of(config)
