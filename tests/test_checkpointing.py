"""Restoring the latest checkpoint: what a read error means, and what is moved (one process).

The same decisions across several processes are in tests/test_pod.py.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from resnet_jax import checkpointing, errors, read_errors
from resnet_jax.steps import TrainState


def small_state(width=3, step=0):
  params = {'conv': {'kernel': jnp.arange(2 * width, dtype=jnp.float32).reshape(2, width)},
            'bn': {'scale': jnp.ones(width)}}
  batch_stats = {'bn': {'mean': jnp.full(width, 0.5)}}
  return TrainState(step=jnp.int32(step), params=params, batch_stats=batch_stats,
                    opt_state=optax.sgd(0.1, momentum=0.9).init(params))


def abstract(state):
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), state)


@pytest.fixture
def workdir(tmp_path):
  """A workdir with checkpoints at steps 2 and 4 of ``small_state``, read in 2 and 4 shards."""
  manager = checkpointing.create_manager(str(tmp_path))
  for step in (2, 4):
    state = small_state(step=step)
    state = state.replace(params=jax.tree.map(lambda x: x + step, state.params))
    checkpointing.save(manager, state, data_position=10 * step, num_shards=step)
  manager.wait_until_finished()
  manager.close()
  return str(tmp_path)


def restore(workdir, state=None):
  manager = checkpointing.create_manager(workdir)
  try:
    return checkpointing.restore_latest(manager, abstract(state or small_state()))
  finally:
    manager.close()


def step_dir(workdir, step):
  return os.path.join(checkpointing.checkpoint_dir(workdir), str(step))


def array_files(workdir, step):
  return [os.path.join(root, name) for root, _, names in os.walk(step_dir(workdir, step))
          for name in names if f'{os.sep}d{os.sep}' in os.path.join(root, name)]


def test_restores_the_newest_step_with_its_values(workdir):
  state, progress = restore(workdir)
  assert progress == {'step': 4, 'data_position': 40, 'num_shards': 4}
  assert int(state.step) == 4
  np.testing.assert_array_equal(state.params['conv']['kernel'], np.arange(6).reshape(2, 3) + 4)


@pytest.mark.parametrize('damage', ['truncated', 'missing', 'unparsable metadata'])
def test_damaged_files_set_the_step_aside_and_restore_the_one_before(workdir, damage):
  if damage == 'unparsable metadata':
    with open(os.path.join(step_dir(workdir, 4), 'model', '_METADATA'), 'w') as f:
      f.write('{not json')
  for path in array_files(workdir, 4) if damage != 'unparsable metadata' else []:
    if damage == 'missing':
      os.remove(path)
    else:
      with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)
  state, progress = restore(workdir)
  assert progress['step'] == 2 and int(state.step) == 2
  assert os.listdir(os.path.join(workdir, 'unreadable_checkpoints')) == ['4']
  assert not os.path.exists(step_dir(workdir, 4))


def test_another_networks_checkpoint_is_a_user_error_that_moves_nothing(workdir):
  before = sorted(os.listdir(checkpointing.checkpoint_dir(workdir)))
  with pytest.raises(errors.CheckpointError) as error:
    restore(workdir, small_state(width=5))
  message = str(error.value)
  assert 'The checkpoint at step 4' in message and 'does not fit this run' in message
  assert "['params']['conv']['kernel']: shape (2, 3) in the checkpoint, (2, 5) in this model" in (
      message)
  assert 'Nothing was moved' in message
  assert sorted(os.listdir(checkpointing.checkpoint_dir(workdir))) == before
  assert not os.path.exists(os.path.join(workdir, 'unreadable_checkpoints'))


def test_transient_errors_are_retried_then_stop_with_every_checkpoint_in_place(
    workdir, monkeypatch):
  calls = []
  read_step = checkpointing.read_step

  def flaky(reader, step, abstract_state, fail_times):
    calls.append(step)
    if len(calls) <= fail_times:
      raise TimeoutError('read timed out')
    return read_step(reader, step, abstract_state)

  monkeypatch.setattr(checkpointing, 'RETRY_DELAYS_S', (0.0, 0.0, 0.0))
  monkeypatch.setattr(checkpointing, 'read_step', lambda *a: flaky(*a, fail_times=2))
  _, progress = restore(workdir)
  assert progress['step'] == 4 and calls == [4, 4, 4]  # Two failures, then read.

  calls.clear()
  monkeypatch.setattr(checkpointing, 'read_step', lambda *a: flaky(*a, fail_times=100))
  with pytest.raises(errors.CheckpointError, match='(?s)could not be read.*left in place'):
    restore(workdir)
  assert calls == [4] * 4  # One try and three retries, never an older step.
  assert sorted(os.listdir(checkpointing.checkpoint_dir(workdir))) == ['2', '4']


def test_the_data_shards_are_read_from_the_newest_readable_progress(workdir, tmp_path):
  assert checkpointing.recorded_num_shards(workdir) == 4
  with open(os.path.join(step_dir(workdir, 4), 'progress', 'metadata'), 'w') as f:
    f.write('{not json')
  assert checkpointing.recorded_num_shards(workdir) == 2
  assert checkpointing.recorded_num_shards(str(tmp_path / 'fresh')) is None


@pytest.mark.parametrize('error, meaning', [
    (FileNotFoundError('gone'), 'damaged'),
    (json.JSONDecodeError('Expecting value', '', 0), 'damaged'),
    (ValueError('DATA_LOSS: Error reading "a/.zarray": checksum mismatch'), 'damaged'),
    (ValueError('OUT_OF_RANGE: Requested byte range [0, 289) is not valid'), 'damaged'),
    (ValueError('NOT_FOUND: Error reading local file "model/d/1a2b"'), 'damaged'),
    (ValueError('Found incomplete checkpoint at /w/checkpoints/6.'), 'damaged'),
    (TimeoutError('read timed out'), 'transient'),
    (ConnectionResetError('peer reset'), 'transient'),
    (ValueError('UNAVAILABLE: GCS returned 503 Service Unavailable'), 'transient'),
    (ValueError('DEADLINE_EXCEEDED: request took too long'), 'transient'),
    (PermissionError('Permission denied'), 'unknown'),
    (RuntimeError('something else'), 'unknown'),
])
def test_read_errors_are_classified_by_what_they_say_about_the_files(error, meaning):
  assert read_errors.classify(error) == meaning
