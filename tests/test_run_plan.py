"""A config resolved once (``run_plan.resolve``): its numbers against hand computations, every
problem in one error, the plan a run writes and reads back, and the TPU planner's plan = the run's.
"""

import dataclasses
import json
import os

import pytest

from configs import cifar10, digits, imagenet
from resnet_jax import errors, run_plan
from resnet_jax.data import datasets
from tests.harness import plan_of, run_main, tiny_digits_config, tiny_digits_flags


def with_fields(config, **fields):
  config.update_from_flattened_dict(fields)
  return config


# (config, devices, processes) -> the numbers, each worked out by hand in its comment.
CASES = {
    # 'train[:45000]' in batches of 128: 45,000 // 128 = 351 steps an epoch (not the full
    # split's 390); 64k steps, /10 at 32k and 48k; the paper's 400 warm-up steps at 0.01.
    'cifar10 resnet110 validation': (
        cifar10.get_config('resnet110,validation'), 1, 1,
        dict(train_examples=45_000, steps_per_epoch=351, total_steps=64_000,
             eval_every=2_000, checkpoint_every=2_000, num_shards=1),
        dict(peak=0.1, warmup='constant', warmup_steps=400, warmup_rate=0.01,
             boundaries=(32_000, 48_000))),
    'cifar10 resnet56': (
        cifar10.get_config('resnet56'), 1, 1,
        dict(train_examples=50_000, steps_per_epoch=390, total_steps=64_000, num_shards=1),
        dict(peak=0.1, warmup='none', warmup_steps=0)),
    # 1,281,167 // 256 = 5,004 steps an epoch; 90 epochs = 450,360 steps; /10 at epochs 30, 60
    # and 80 = steps 150,120, 300,240 and 400,320; an evaluation and a checkpoint each epoch.
    'imagenet resnet50': (
        imagenet.get_config('resnet50'), 8, 1,
        dict(steps_per_epoch=5_004, total_steps=450_360, eval_every=5_004,
             checkpoint_every=5_004, num_shards=1),
        dict(peak=0.1, warmup='none', boundaries=(150_120, 300_240, 400_320))),
    # Batch 1,024 on 2 hosts: 2 shards of 640,583 (the smaller), 512 examples each a step:
    # 1,251 steps an epoch; the rate 0.1 x 1024 / 256 = 0.4, reached over 5 epochs = 6,255 steps.
    'imagenet resnet50 batch 1024 on 2 hosts': (
        with_fields(imagenet.get_config('resnet50'), batch_size=1024), 8, 2,
        dict(steps_per_epoch=1_251, total_steps=112_590, num_shards=2, shard_batch=512,
             process_batch=512),
        dict(peak=0.4, warmup='ramp', warmup_steps=6_255, boundaries=(37_530, 75_060, 100_080))),
    # 1,500 // 64 = 23 steps an epoch; 16 epochs = 368 steps; /10 at epochs 8 and 12.
    'digits': (
        digits.get_config(), 1, 1,
        dict(train_examples=1_500, steps_per_epoch=23, total_steps=368, eval_every=92,
             num_shards=1),
        dict(peak=0.1, warmup='none', boundaries=(184, 276))),
    # 4 shards of 375 examples (2 per host), 16 of each a step: 23 steps an epoch.
    'digits in 4 shards on 2 hosts': (
        with_fields(digits.get_config(), **{'dataset.num_shards': 4}), 2, 2,
        dict(steps_per_epoch=23, num_shards=4, shard_batch=16, process_batch=32), dict()),
}


@pytest.mark.parametrize('name', list(CASES))
def test_the_plan_of_a_config_is_its_numbers_worked_out_by_hand(name):
  config, devices, processes, numbers, rate = CASES[name]
  plan = plan_of(config, devices=devices, processes=processes)
  assert {key: getattr(plan, key) for key in numbers} == numbers
  assert {key: getattr(plan.learning_rate, key) for key in rate} == rate
  assert plan.learning_rate.total_steps == plan.total_steps


def test_every_problem_of_a_config_is_in_one_error():
  config = with_fields(digits.get_config(), **{
      'model.name': 'resnet21', 'batch_size': 30, 'optimizer.learning_rate': -0.1,
      'dataset.eval_split': 'validation', 'steps_per_call': 0})
  with pytest.raises(errors.ConfigError) as refusal:
    plan_of(config, devices=4)
  message = str(refusal.value)
  for problem in ("model.name='resnet21' is not a model", 'batch_size=30 is not divisible by '
                  'the 4 devices', 'optimizer.learning_rate=-0.1 must be positive',
                  "dataset.eval_split='validation' cannot be read from digits",
                  'steps_per_call=0 must be at least 1'):
    assert problem in message, problem


def test_the_plan_of_a_dataset_comes_from_its_prepared_copy(data_dir, tmp_path):
  # A copy of ImageNet's layout with 12 images: its sizes, not the catalog's, make the epoch.
  from resnet_jax.testing import tfrecord_imagenet  # pylint: disable=import-outside-toplevel
  jpegs = tfrecord_imagenet.tiny_jpegs(12, size=32)
  tfrecord_imagenet.prepare(str(tmp_path), {'train': (jpegs, range(12)),
                                            'validation': (jpegs[:5], range(5))}, num_files=2)
  config = with_fields(imagenet.get_config('resnet18'), **{
      'dataset.data_dir': str(tmp_path), 'batch_size': 4, 'model.bn_group_size': 0})
  plan = datasets.plan_for(config)
  assert (plan.train_examples, plan.steps_per_epoch, plan.eval_sets[0].num_examples) == (12, 3, 5)
  assert plan_of(config).steps_per_epoch == 1_281_167 // 4  # The registry's: the catalog's.


@pytest.mark.e2e
def test_a_run_writes_its_plan_and_reads_it_back(data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  run_main(workdir, 'configs/digits.py', tiny_digits_flags(data_dir, total_steps=2))
  with open(tmp_path / 'run' / run_plan.PLAN_FILE) as f:
    written = json.load(f)
  assert (written['steps_per_epoch'], written['total_steps'], written['eval_sets'][0]['prefix']) \
      == (1500 // 32, 2, 'eval_')
  loaded = run_plan.load(workdir)
  resolved = datasets.plan_for(tiny_digits_config(data_dir, total_steps=2))
  for field in dataclasses.fields(run_plan.RunPlan):
    if field.name != 'config':
      assert getattr(loaded, field.name) == getattr(resolved, field.name), field.name
  assert json.loads(loaded.config.to_json_best_effort()) == json.loads(
      resolved.config.to_json_best_effort())


def test_the_tpu_planner_plans_the_run_that_main_py_would_train(tmp_path):
  # CIFAR-10's metadata as tfds writes it when it prepares the dataset: the run's facts.
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  from tools import tpu_plan  # pylint: disable=import-outside-toplevel
  builder = tfds.builder('cifar10', data_dir=str(tmp_path))
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=name, shard_lengths=[count], num_bytes=0, filename_template=None)
      for name, count in (('train', 50_000), ('test', 10_000))]))
  os.makedirs(builder.data_dir)
  builder.info.write_to_directory(builder.data_dir)
  config = with_fields(cifar10.get_config('resnet110,validation'),
                       **{'dataset.data_dir': str(tmp_path), 'eval_batch_size': 512})
  slice_of_two_hosts = [type('Device', (), {'process_index': i // 4})() for i in range(8)]
  planned = tpu_plan.resolve(config, slice_of_two_hosts)
  run = run_plan.resolve(config, devices=8, processes=2, facts=datasets.facts(config.dataset))
  assert planned.to_dict() == run.to_dict()
  # Two shards of 22,500 images, 64 of each a step: 351 steps an epoch, as on one host.
  assert (planned.steps_per_epoch, planned.num_shards) == (351, 2)
