"""config.extra_evals through main.py: each set's summaries under its own prefix at every
evaluation, their values checked outside the training loop, a restart that goes on with them, and
sets of another label space refused before anything is compiled or written."""

import functools
import re

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import cifar10, digits
from resnet_jax import events, notebook, train
from resnet_jax.data import registry
from resnet_jax.errors import ConfigError
from resnet_jax.testing.mock_tfds import prepared_mock
from tests.harness import evaluated_lines, plan_of, run_main, tiny_digits_flags

# 'same' is the eval split itself; 'head' the first 200 training images.
EXTRA_EVALS = "('same=digits:test', 'head=digits:train[:200]')"
METRICS = ('loss', 'error_top1', 'error_top5')
CIFAR10_CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
                   'truck']


@pytest.fixture(scope='module')
def restarted(data_dir, tmp_path_factory):
  """A run stopped at its step-3 checkpoint and evaluation, then restarted to step 5: the
  workdir and each run's console output."""
  workdir = str(tmp_path_factory.mktemp('extra_evals'))
  outputs = [run_main(workdir, 'configs/digits.py',
                      tiny_digits_flags(data_dir, extra_evals=EXTRA_EVALS, **steps)).stderr
             for steps in ({'total_steps': 3}, {})]
  return workdir, outputs


def console_steps(output, name):
  """The steps of the console lines that give set ``name``'s evaluation ('step 3: same error
  ...')."""
  return [int(step) for step in re.findall(rf'\] step (\d+): {re.escape(name)} error ', output)]


@pytest.mark.e2e
def test_each_set_is_summarised_under_its_prefix_once_per_evaluation_across_a_restart(restarted):
  workdir, (first, second) = restarted
  assert 'Resumed from the checkpoint at step 3' in second
  scalars = events.read_scalars(workdir)
  for prefix, name in (('eval_', 'test'), ('same/', 'same'), ('head/', 'head')):
    for metric in METRICS:
      assert scalars[prefix + metric][0].tolist() == [3, 5], prefix + metric
    # Evaluated once at each step, by the run that reached it: none twice, none lost.
    assert console_steps(first, name) == [3], name
    assert console_steps(second, name) == [5], name


@pytest.mark.e2e
def test_a_set_identical_to_the_eval_split_records_the_same_numbers(restarted):
  scalars = events.read_scalars(restarted[0])
  for metric in METRICS:
    np.testing.assert_array_equal(scalars[f'same/{metric}'][1], scalars[f'eval_{metric}'][1])


@pytest.mark.e2e
def test_another_split_records_the_metrics_of_its_own_examples(restarted):
  # The network of each evaluated checkpoint on the raw first 200 training images, preprocessed
  # by the numpy path, with the metrics computed here in numpy.
  workdir = restarted[0]
  scalars = events.read_scalars(workdir)
  run = notebook.load_run(workdir)
  raw_images, labels = run.examples(200, split='train')
  images = run.preprocess(raw_images)
  forward = jax.jit(functools.partial(run.model.apply, train=False))
  for index, step in enumerate((3, 5)):
    logits = np.asarray(forward(notebook.load_run(workdir, step).variables, images), np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    loss = np.mean(np.log(np.exp(shifted).sum(-1)) - shifted[np.arange(200), labels])
    rank = (logits > logits[np.arange(200), labels][:, None]).sum(-1)  # Classes scored higher.
    recorded = {metric: scalars[f'head/{metric}'][1][index] for metric in METRICS}
    assert recorded['loss'] == pytest.approx(loss, rel=1e-5), step
    assert recorded['error_top1'] == pytest.approx(np.mean(rank >= 1), abs=1e-6), step
    assert recorded['error_top5'] == pytest.approx(np.mean(rank >= 5), abs=1e-6), step
    assert recorded['loss'] != scalars['eval_loss'][1][index]  # Not the eval split's numbers.


@pytest.mark.e2e
def test_eval_mode_prints_every_set_named_as_its_summaries(restarted, capsys):
  workdir = restarted[0]
  returned = notebook.evaluate_latest(workdir)
  lines = evaluated_lines(capsys.readouterr().out)
  assert [(line['step'], line['set'], line['devices']) for line in lines] == [
      (5, 'test', 1), (5, 'same (digits:test)', 1), (5, 'head (digits:train[:200])', 1)]
  scalars = events.read_scalars(workdir)
  for line, prefix in zip(lines, ('eval_', 'same/', 'head/')):
    assert line['error_top1'] == round(100 * scalars[f'{prefix}error_top1'][1][-1], 2)
    assert line['error_top5'] == round(100 * scalars[f'{prefix}error_top5'][1][-1], 2)
    assert line['loss'] == pytest.approx(scalars[f'{prefix}loss'][1][-1], rel=1e-3)
  assert returned == pytest.approx(
      {metric: scalars[f'eval_{metric}'][1][-1] for metric in METRICS}, rel=1e-5)


def refusal(config, workdir):
  """The ConfigError that train_and_evaluate raises for ``config``, having written nothing."""
  with pytest.raises(ConfigError) as error:
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()
  return str(error.value)


def test_sets_of_another_label_space_are_refused_with_the_reason(data_dir, tmp_path):
  config = digits.get_config()
  config.dataset.data_dir = data_dir
  config.extra_evals = ('v2=imagenet2012:validation', 'cifar10:test', 'digits:test',
                        'digits:train')
  message = refusal(config, tmp_path / 'run')
  assert ("extra_evals entry 'v2=imagenet2012:validation': imagenet2012 does not share the label "
          'space of dataset.name=digits (1000 classes, not 10; 3 channels, not 1; imagenet '
          'preprocessing family, not small)') in message
  assert ("extra_evals entry 'cifar10=cifar10:test': cifar10 does not share the label space of "
          'dataset.name=digits (3 channels, not 1)') in message
  assert ("extra_evals names 'digits' 2 times ('digits:test', 'digits:train'); give each its own "
          "summary prefix: 'NAME=DATASET:SPLIT'.") in message


@pytest.mark.parametrize('entry, reason', [
    ('digits', "extra_evals entry 'digits' is not 'NAME=DATASET:SPLIT' or 'DATASET:SPLIT'"),
    ('a/b=digits:test', "extra_evals entry 'a/b=digits:test' is not 'NAME=DATASET:SPLIT'"),
    ('no_such_set:test', ("extra_evals entry 'no_such_set=no_such_set:test': The dataset "
                          "'no_such_set' is neither a registered dataset")),
    ('digits:validation', ("extra_evals entry 'digits=digits:validation' cannot be read from "
                           "digits: it has no split 'validation'. Its splits are train (1,500 "
                           'images), test (297 images).')),
    ('digits:train[1500:]', ("extra_evals entry 'digits=digits:train[1500:]' holds no examples "
                             'of digits.')),
])
def test_entries_that_name_no_evaluation_set_are_refused(data_dir, tmp_path, entry, reason):
  config = digits.get_config()
  config.dataset.data_dir = data_dir
  config.extra_evals = (entry,)
  assert reason in refusal(config, tmp_path / 'run')


@pytest.mark.skipif('svhn_cropped' not in registry.DATASETS,
                    reason='needs a second 10-class, 3-channel dataset in the registry')
def test_a_set_labelled_with_other_classes_is_refused(tmp_path):
  # SVHN's classes are named 0, 1, ...; CIFAR-10's airplane, automobile, ..., which its tfds
  # builder records when it prepares the dataset: the mock records them here.
  data_dir = str(tmp_path / 'tfds')
  config = cifar10.get_config()
  config.dataset.update(data_dir=data_dir, train_split='train', eval_split='test')
  config.batch_size = 8  # The mocked splits' size.
  config.extra_evals = ('svhn=svhn_cropped:test',)
  plan_of(config)  # The registry's facts alike: the class names differ.
  with prepared_mock('cifar10', data_dir, 8), prepared_mock('svhn_cropped', data_dir, 8):
    builder = tfds.builder('cifar10', data_dir=data_dir)
    builder.info.features['label'].names = CIFAR10_CLASSES
    builder.info.write_to_directory(builder.data_dir)
    message = refusal(config, tmp_path / 'run')
  assert ("extra_evals entry 'svhn=svhn_cropped:test': svhn_cropped's classes are not those of "
          "cifar10 (class 0 is '0', not 'airplane')") in message


def cifar10_run(data_dir, *extra_evals):
  """A one-step CIFAR-10 run of a 3-block ResNet beside ``extra_evals``."""
  config = cifar10.get_config('resnet20')
  config.model.stage_sizes = (1, 1, 1)
  config.dataset.update(data_dir=data_dir, train_split='train', eval_split='test')
  config.batch_size, config.eval_batch_size = 8, 8
  config.total_steps = config.log_every_steps = config.eval_every_steps = 1
  config.checkpoint_every_steps = 1
  config.extra_evals = extra_evals
  return config


def test_a_tfds_dataset_without_an_entry_evaluates_beside_the_main_one(tmp_path):
  # CIFAR-10.1 (v6), a new test set drawn as CIFAR-10's was, known to tfds, not to the registry.
  data_dir, workdir = str(tmp_path / 'tfds'), str(tmp_path / 'run')
  with prepared_mock('cifar10', data_dir, 8), prepared_mock('cifar10_1/v6', data_dir, 8,
                                                            splits=('test',)):
    train.train_and_evaluate(cifar10_run(data_dir, 'c101=cifar10_1/v6:test'), workdir)
  scalars = events.read_scalars(workdir)
  for metric in METRICS:
    steps, values = scalars[f'c101/{metric}']
    assert list(steps) == [1] and np.isfinite(values).all()


def test_a_tfds_dataset_of_another_label_space_is_refused_from_its_builder(tmp_path):
  # EMNIST's balanced set: 47 classes of grey images, its facts read from its builder.
  data_dir = str(tmp_path / 'tfds')
  config = cifar10_run(data_dir, 'letters=emnist/balanced:test')
  with prepared_mock('cifar10', data_dir, 8), prepared_mock('emnist/balanced', data_dir, 8):
    message = refusal(config, tmp_path / 'run')
  assert ("extra_evals entry 'letters=emnist/balanced:test': emnist/balanced does not share the "
          'label space of dataset.name=cifar10 (47 classes, not 10; 1 channels, not 3)') in message
