"""The plateau schedule in a real run: driven by the eval error, checkpointed, resumed exactly."""

import jax
import numpy as np
import pytest

from resnet_jax import events
from tests.harness import final_params, run_main, tiny_digits_flags, train_losses

pytestmark = pytest.mark.e2e  # Every test starts processes.


def plateau_flags(data_dir, **overrides):
  # Evaluate every step; a threshold of 1.0 (the whole error range) is never met after the first
  # evaluation, so with patience 1 every later evaluation divides the rate by 10. The batch of 32
  # is twice the reference batch: the rate 0.02 scales to 0.04, reached by a ramp over 4 steps
  # (digits: 46 steps per epoch at batch 32).
  return tiny_digits_flags(data_dir, **{
      'optimizer.schedule': 'plateau', 'optimizer.plateau_patience': 1,
      'optimizer.plateau_threshold': 1.0, 'eval_every_steps': 1,
      'optimizer.lr_reference_batch': 16, 'optimizer.scaling_warmup_epochs': 4 / 46,
      **overrides})


def test_plateau_scale_multiplies_the_warmup_ramp_and_resumes_bit_for_bit(data_dir, tmp_path):
  whole, resumed = str(tmp_path / 'whole'), str(tmp_path / 'resumed')
  run_main(whole, 'configs/digits.py', plateau_flags(data_dir))
  # By hand: step s runs at 0.02 + 0.005 s (the ramp: 0.02, 0.025, 0.03, 0.035, then 0.04) times
  # the scale; the eval after step 1 sets the best, each later eval divides by 10.
  lr_steps, lr = events.read_scalars(whole)['train_learning_rate']
  np.testing.assert_allclose(lr[np.argsort(lr_steps)], [0.02, 0.025, 0.003, 3.5e-4, 4e-5],
                             rtol=1e-5)

  run_main(resumed, 'configs/digits.py', plateau_flags(data_dir, total_steps=3))
  result = run_main(resumed, 'configs/digits.py', plateau_flags(data_dir))
  assert 'Resumed from the checkpoint at step 3' in result.stderr
  assert train_losses(resumed) == train_losses(whole)
  # The plateau state came back from the checkpoint: steps 4 and 5 keep dividing.
  lr_steps, lr_resumed = events.read_scalars(resumed)['train_learning_rate']
  np.testing.assert_array_equal(lr_resumed[np.argsort(lr_steps)], lr[np.argsort(lr_steps)])
  for x, y in zip(jax.tree.leaves(final_params(resumed)), jax.tree.leaves(final_params(whole))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
