"""Several train steps per jitted call: where calls end, the step loop, and real runs on both
input paths (tf.data batches K to a call, and the device-resident split)."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from clu import metrics

from configs import digits
from resnet_jax import checkpointing, events, models, steps, train
from resnet_jax.errors import ConfigError
from resnet_jax.parallel import multistep, sharding
from tests.harness import plan_of


@pytest.mark.parametrize('start, end, per_call, intervals, expected', [
    (0, 10, 4, (6,), [4, 6, 8, 10]),     # Calls end at every interval and at the end.
    (0, 12, 3, (6, 12), [3, 6, 9, 12]),  # steps_per_call dividing the intervals: equal calls.
    (5, 12, 4, (100,), [8, 12]),         # A resumed run realigns on multiples of steps_per_call.
    (0, 4, 1, (2,), [1, 2, 3, 4]),       # One step per call: every step.
])
def test_call_ends(start, end, per_call, intervals, expected):
  assert multistep.call_ends(start, end, per_call, intervals) == expected


def double_and_add(state, batch):
  """A step whose states and metrics are easy by hand: s' = 2 s + batch; metric: mean of s."""
  return 2 * state + (1.0 if batch is None else batch), metrics.Average.from_model_output(state)


@pytest.mark.parametrize('unroll', [True, False])
def test_run_steps_by_hand(unroll):
  run = jax.jit(functools.partial(multistep.run_steps, double_and_add, unroll=unroll))
  state, merged = run(jnp.float32(1), [jnp.float32(b) for b in (1, 2, 3)])
  assert float(state) == 19  # 1 -> 3 -> 8 -> 19.
  assert float(merged.compute()) == pytest.approx((1 + 3 + 8) / 3)
  assert int(merged.count) == 3
  state, merged = run(jnp.float32(0), [None, None])  # Each step gets None (adds 1).
  assert float(state) == 3 and float(merged.compute()) == pytest.approx(0.5)


def test_group_batches_groups_consecutive_batches_uncopied_and_reads_no_further():
  source = [{'label': np.array([i, i])} for i in range(10)]
  batches = iter(source)
  groups = list(multistep.group_batches(batches, [2, 1, 3]))
  assert [[b['label'][0] for b in g] for g in groups] == [[0, 1], [2], [3, 4, 5]]
  assert groups[2][0] is source[3]
  assert next(batches)['label'][0] == 6


def test_steps_per_call_below_one_is_refused():
  config = digits.get_config()
  config.steps_per_call = 0
  with pytest.raises(ConfigError, match='steps_per_call=0 must be at least 1'):
    plan_of(config, devices=1, processes=1)


def short_config(data_dir, total_steps, *, device_resident, steps_per_call=2):
  config = digits.get_config()
  config.dataset.update(data_dir=data_dir, device_resident=device_resident, augment=True)
  config.update(batch_size=32, eval_batch_size=100, total_epochs=None, total_steps=total_steps,
                steps_per_call=steps_per_call, log_every_steps=2, eval_every_steps=4,
                checkpoint_every_steps=4)
  config.optimizer.update(lr_boundaries=(4,), lr_boundaries_unit='steps', learning_rate=0.02)
  return config


@pytest.mark.parametrize('device_resident', [False, True])
def test_several_steps_per_call_log_checkpoint_and_resume_exactly(data_dir, tmp_path,
                                                                   device_resident):
  run = lambda workdir, steps: train.train_and_evaluate(
      short_config(data_dir, steps, device_resident=device_resident), workdir)
  straight = str(tmp_path / 'straight')
  state = run(straight, 6)
  assert int(state.step) == 6
  scalars = events.read_scalars(straight)
  assert scalars['train_loss'][0].tolist() == [2, 4, 6]
  assert np.isfinite(scalars['train_loss'][1]).all()
  np.testing.assert_allclose(scalars['train_learning_rate'][1], [0.02, 0.02, 0.002], rtol=1e-6)
  assert scalars['eval_error_top1'][0].tolist() == [4, 6]
  assert sorted(os.listdir(checkpointing.checkpoint_dir(straight))) == ['4', '6']
  resumed = str(tmp_path / 'resumed')
  run(resumed, 4)
  state = run(resumed, 6)  # Resumes at step 4: the data continues exactly.
  final, _ = checkpointing.restore_variables(straight)
  for x, y in zip(jax.tree.leaves(final), jax.tree.leaves(state.variables)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_tf_data_batches_train_the_same_in_calls_of_three_steps_as_one_by_one(data_dir,
                                                                               tmp_path):
  finals = []
  for steps_per_call in (1, 3):
    workdir = str(tmp_path / str(steps_per_call))
    config = short_config(data_dir, 6, device_resident=False, steps_per_call=steps_per_call)
    config.update(log_every_steps=3, eval_every_steps=6, checkpoint_every_steps=6)
    train.train_and_evaluate(config, workdir)  # With 3 per call: two calls of 3 steps.
    finals.append(checkpointing.restore_variables(workdir)[0])
    losses = events.read_scalars(workdir)['train_loss']
    assert losses[0].tolist() == [3, 6]
    finals.append(losses[1])
  # Same batches, same updates; only XLA's fusion across steps may round differently.
  for x, y in zip(jax.tree.leaves(finals[0]), jax.tree.leaves(finals[2])):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(finals[1], finals[3], rtol=1e-5)


@pytest.mark.parametrize('unroll', [True, False])
def test_train_fn_matches_step_by_step_calls(monkeypatch, unroll):
  """Both forms (unrolled: CPU; ``lax.scan``: accelerators) against K separate jitted steps."""
  model = models.create_model('resnet20', 10)
  tx = optax.sgd(0.1, momentum=0.9)
  init = lambda: steps.init_train_state(model, tx, jax.random.key(0), image_shape=(8, 8, 3))
  mesh = sharding.create_mesh()
  train_step = functools.partial(steps.train_step, model=model, tx=tx,
                                 learning_rate_fn=lambda step: 0.1, mesh=mesh)
  rng = np.random.default_rng(0)
  batches = tuple({'image': rng.standard_normal((4, 8, 8, 3), np.float32),
                   'label': rng.integers(0, 10, 4).astype(np.int32)} for _ in range(3))
  expected, one_step, losses = init(), jax.jit(train_step), []
  for batch in batches:
    expected, step_metrics = one_step(expected, batch)
    losses.append(float(step_metrics.compute()['loss']))
  monkeypatch.setattr(multistep, 'unrolls', lambda mesh: unroll)
  state, merged = multistep.make_train_fn(train_step, mesh)(init(), batches)
  assert int(state.step) == 3
  assert float(merged.compute()['loss']) == pytest.approx(np.mean(losses), rel=1e-5)
  for x, y in zip(jax.tree.leaves(state.params), jax.tree.leaves(expected.params)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)
