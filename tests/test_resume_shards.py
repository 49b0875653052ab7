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
from resnet_jax import checkpointing, errors, run_plan
from resnet_jax.data import datasets, registry
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


def resumed_plan(config, recorded, processes, facts=registry.get):
  return run_plan.resolve(config, devices=processes, processes=processes, facts=facts,
                          recorded_shards=recorded)


def test_num_shards_zero_resumes_with_the_recorded_shards_where_the_processes_divide_them(
    caplog):
  config = digits.get_config()
  config.batch_size = 96  # Divisible by every process count here.
  for recorded, processes in ((None, 3), (2, 2)):  # A fresh (or old) run; one shard a process.
    plan = resumed_plan(config, recorded, processes)
    assert (plan.num_shards, plan.config.dataset.num_shards) == (processes, 0)
  for recorded, processes in ((2, 1), (8, 4), (8, 2)):
    plan = resumed_plan(config, recorded, processes)
    assert plan.num_shards == plan.config.dataset.num_shards == recorded
    assert config.dataset.num_shards == 0
  with pytest.raises(errors.ConfigError) as refused:
    resumed_plan(config, 2, 3)
  assert ('written with 2 data shards' in str(refused.value)
          and '--config.dataset.num_shards=3' in str(refused.value))
  config.dataset.num_shards = 4  # Asked for: followed, with a warning.
  with caplog.at_level(logging.WARNING):
    assert resumed_plan(config, 2, 1).num_shards == 4
  assert 'not the 2 the checkpoint was written with' in caplog.text


def test_two_processes_checkpoint_resumed_on_one_reads_the_same_batches_bit_for_bit(
    data_dir, tmp_path):
  # Steps 44-48 cross the end of the first epoch (46 steps of 2 shards x 16 images).
  workdir, start, count = str(tmp_path), 44, 4
  config = digits_config(data_dir)
  write_checkpoint(workdir, num_shards=datasets.plan_for(config, processes=2).num_shards)
  resumed = resumed_plan(config, checkpointing.recorded_num_shards(workdir), 1,
                         facts=datasets.facts(config.dataset))

  def batches(data):
    stream = data.train_batches(start)
    return [next(stream) for _ in range(count)]

  two = [batches(datasets.open_config(config, processes=2, process_index=p)) for p in range(2)]
  one = batches(datasets.open_dataset(resumed))
  for step in range(count):
    for field in ('image', 'label'):
      np.testing.assert_array_equal(
          one[step][field], np.concatenate([two[0][step][field], two[1][step][field]]))
  assert resumed.steps_per_epoch == datasets.plan_for(config, processes=2).steps_per_epoch == 46
  # Without the record, one process would cut one shard and read another order.
  alone = batches(datasets.open_config(config))
  assert not np.array_equal(alone[0]['label'], one[0]['label'])


@pytest.mark.e2e
def test_main_resumes_with_the_recorded_shards_and_keeps_them(data_dir, tmp_path):
  workdir = str(tmp_path)
  run_main(workdir, 'configs/digits.py', tiny_digits_flags(
      data_dir, **{'total_steps': 2, 'dataset.num_shards': 2}))
  result = run_main(workdir, 'configs/digits.py', tiny_digits_flags(data_dir, total_steps=3))
  assert 'Resuming with the 2 data shards the checkpoints were written with' in result.stderr
  assert checkpointing.recorded_num_shards(workdir) == 2
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['dataset']['num_shards'] == 2


@pytest.mark.e2e
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
    assert ('ConfigError: Invalid config:' in output
            and 'The checkpoints were written with 3 data shards' in output
            and '--config.dataset.num_shards=2' in output and 'Traceback' not in output), (
                output[-3000:])
    assert 'Training resnet20' not in output
  assert snapshot(workdir) == before
