"""A resume on another number of processes keeps the data shards its checkpoint was written with,
or is refused before anything is compiled (docs/reliability.md)."""

import json
import logging
import os

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import digits
from resnet_jax import checkpointing, config_lib
from resnet_jax.data import pipeline
from resnet_jax.steps import TrainState
from tests.harness import free_port, process_args, run_main, tiny_digits_flags
from tests.test_reliability import snapshot


def digits_config(data_dir, num_shards=0):
  config = digits.get_config()
  config.dataset.update(data_dir=data_dir, num_shards=num_shards, augment=True)
  config.batch_size = 32
  return config


def write_checkpoint(workdir, num_shards, step=44):
  """A checkpoint at ``step`` recording ``num_shards``; its state is a stand-in."""
  params = {'w': jnp.zeros(3)}
  manager = checkpointing.create_manager(workdir)
  checkpointing.save(manager, TrainState(step=jnp.int32(step), params=params, batch_stats={},
                                         opt_state=optax.sgd(0.1).init(params)),
                     data_position=step, num_shards=num_shards)
  manager.wait_until_finished()
  manager.close()


def test_num_shards_zero_resumes_with_the_recorded_shards_where_the_processes_divide_them(
    caplog):
  config = digits.get_config()
  assert config_lib.resume_data_shards(config, None, 3) is config  # A fresh run, or an old one.
  assert config_lib.resume_data_shards(config, 2, 2) is config  # One shard per process still.
  for recorded, processes in ((2, 1), (8, 4), (8, 2)):
    resumed = config_lib.resume_data_shards(config, recorded, processes)
    assert resumed.dataset.num_shards == recorded and config.dataset.num_shards == 0
  with pytest.raises(config_lib.ConfigError) as refused:
    config_lib.resume_data_shards(config, 2, 3)
  assert ('written with 2 data shards' in str(refused.value)
          and '--config.dataset.num_shards=3' in str(refused.value))
  config.dataset.num_shards = 4  # Asked for: followed, with a warning.
  with caplog.at_level(logging.WARNING):
    assert config_lib.resume_data_shards(config, 2, 1) is config
  assert 'not the 2 the checkpoint was written with' in caplog.text


def test_two_processes_checkpoint_resumed_on_one_reads_the_same_batches_bit_for_bit(
    data_dir, tmp_path):
  # Steps 44-48 cross the end of the first epoch (46 steps of 2 shards x 16 images).
  workdir, start, count = str(tmp_path), 44, 4
  write_checkpoint(workdir, num_shards=config_lib.data_shards(digits_config(data_dir), 2))
  config = digits_config(data_dir)
  resumed = config_lib.resume_data_shards(config, checkpointing.recorded_num_shards(workdir), 1)

  def batches(config, process_index, process_count):
    stream = pipeline.train_batches(config, start_step=start, process_index=process_index,
                                          process_count=process_count)
    return [next(stream) for _ in range(count)]

  two = [batches(config, p, 2) for p in range(2)]
  one = batches(resumed, 0, 1)
  for step in range(count):
    for field in ('image', 'label'):
      np.testing.assert_array_equal(
          one[step][field], np.concatenate([two[0][step][field], two[1][step][field]]))
  assert (pipeline.steps_per_epoch(resumed, process_count=1)
          == pipeline.steps_per_epoch(config, process_count=2))
  # Without the record, one process would cut one shard and read another order.
  alone = batches(config, 0, 1)
  assert not np.array_equal(alone[0]['label'], one[0]['label'])


def test_main_resumes_with_the_recorded_shards_and_keeps_them(data_dir, tmp_path):
  workdir = str(tmp_path)
  run_main(workdir, 'configs/digits.py', tiny_digits_flags(
      data_dir, **{'total_steps': 2, 'dataset.num_shards': 2}))
  result = run_main(workdir, 'configs/digits.py', tiny_digits_flags(data_dir, total_steps=3))
  assert 'Resuming with the 2 data shards the checkpoints were written with' in result.stderr
  assert checkpointing.recorded_num_shards(workdir) == 2
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['dataset']['num_shards'] == 2


def test_main_refuses_shards_its_processes_cannot_share_before_compiling(data_dir, tmp_path):
  workdir = str(tmp_path)
  write_checkpoint(workdir, num_shards=3)
  before = snapshot(workdir)
  port = free_port()
  processes = [run_main(workdir, 'configs/digits.py', tiny_digits_flags(data_dir),
                        background=True, extra_args=process_args(port, i, 2)) for i in range(2)]
  for process in processes:
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 2, output[-3000:]
    assert ('ConfigError: The checkpoints were written with 3 data shards' in output
            and '--config.dataset.num_shards=2' in output and 'Traceback' not in output), (
                output[-3000:])
    assert 'Training resnet20' not in output
  assert snapshot(workdir) == before
