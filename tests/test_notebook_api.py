"""Runs opened as a notebook opens them, checked against what training recorded in its events."""

import ast
import copy
import dataclasses
import json
import os
import subprocess
import sys

import flax
import jax
import numpy as np
import pytest
from sklearn.datasets import load_digits

import resnet_jax
from resnet_jax import checkpointing, errors, events
from resnet_jax.data import digits as digits_dataset
from tests.harness import ROOT, evaluated_lines, run_main, tiny_digits_flags

pytestmark = pytest.mark.e2e  # Every test starts processes.


@pytest.fixture(scope='module')
def workdir(data_dir, tmp_path_factory):
  """5 steps on one device; evaluated and checkpointed at steps 3 and 5."""
  path = str(tmp_path_factory.mktemp('runs') / 'tiny')
  run_main(path, 'configs/digits.py', tiny_digits_flags(data_dir))
  return path


@pytest.fixture(scope='module')
def run(workdir):
  return resnet_jax.load_run(workdir)


def recorded_eval(workdir, step):
  """{'loss', 'error_top1', 'error_top5'} that training wrote to its events at ``step``."""
  scalars = events.read_scalars(workdir)
  return {name: float(values[steps == step][0]) for name in ('loss', 'error_top1', 'error_top5')
          for steps, values in [scalars[f'eval_{name}']]}


def python(code):
  """Runs ``code`` in a fresh Python on one CPU device; returns its stdout."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_force_host_platform_device_count=1')
  result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-5000:]
  return result.stdout


def test_three_lines_in_a_fresh_python_reproduce_the_recorded_evaluation(workdir):
  out = python('import resnet_jax\n'
               f'run = resnet_jax.load_run({workdir!r})\n'
               'print(repr(run.evaluate()))')
  assert ast.literal_eval(out.splitlines()[-1]) == recorded_eval(workdir, 5)


def test_importing_the_package_stays_light():
  heavy = "{'resnet_jax.notebook', 'orbax.checkpoint', 'tensorflow'}"
  out = python(f'import sys, resnet_jax.models\nprint(sorted({heavy} & set(sys.modules)))')
  assert out.strip() == '[]'


def test_an_earlier_step_reproduces_its_own_evaluation(workdir, run):
  assert run.step == 5
  earlier = resnet_jax.load_run(workdir, step=3)
  assert earlier.step == 3
  assert earlier.evaluate() == recorded_eval(workdir, 3)
  assert recorded_eval(workdir, 3) != recorded_eval(workdir, 5)


def test_loads_without_the_optimizer_state(workdir, run, tmp_path):
  copied = str(tmp_path / 'copy')
  subprocess.run(['cp', '-r', workdir, copied], check=True)
  for step in os.listdir(checkpointing.checkpoint_dir(copied)):
    subprocess.run(['rm', '-r', os.path.join(checkpointing.checkpoint_dir(copied), step,
                                             'opt_state')], check=True)
  loaded = resnet_jax.load_run(copied)
  assert set(loaded.variables) == {'params', 'batch_stats'}
  for x, y in zip(jax.tree.leaves(loaded.variables), jax.tree.leaves(run.variables)):
    np.testing.assert_array_equal(x, y)


def test_errors_name_what_exists(workdir, run):
  parent = os.path.dirname(workdir)
  with pytest.raises(errors.CheckpointError, match=r'does not exist.*: tiny\.'):
    resnet_jax.load_run(os.path.join(parent, 'tiyn'))
  with pytest.raises(errors.CheckpointError, match=r'no checkpoints/.*: tiny\.'):
    resnet_jax.load_run(parent)
  with pytest.raises(errors.CheckpointError, match=r'step 4 .* steps \[3, 5\]'):
    resnet_jax.load_run(workdir, step=4)
  other = copy.deepcopy(run.config)
  other.model.name = 'resnet32'
  with pytest.raises(errors.ConfigError,
                     match="the run's -> the given: model.name: 'resnet20' -> 'resnet32'"):
    resnet_jax.load_run(workdir, config=other)


def raw_test_split():
  """The 297 test digits straight from scikit-learn, as the dataset documents them."""
  digits = load_digits()
  indices = digits_dataset.split_indices()['test']
  return digits_dataset.to_uint8(digits.images[indices])[..., None], digits.target[indices]


def test_predictions_on_raw_images_agree_with_the_recorded_evaluation(workdir, run):
  images, labels = raw_test_split()
  predictions = run.predict(images, top_k=5)
  assert predictions.logits.shape == (297, 10) and predictions.labels.shape == (297, 5)
  ranked = np.take_along_axis(predictions.logits, predictions.labels, axis=1)
  np.testing.assert_array_equal(ranked, -np.sort(-predictions.logits, axis=1)[:, :5])
  recorded = recorded_eval(workdir, 5)
  wrong_top1 = np.sum(predictions.labels[:, 0] != labels)
  wrong_top5 = np.sum(np.all(predictions.labels != labels[:, None], axis=1))
  assert (wrong_top1, wrong_top5) == (round(recorded['error_top1'] * 297),
                                      round(recorded['error_top5'] * 297))
  # Batches of 64 padded at the end, or one batch of 7: the same logits.
  np.testing.assert_allclose(run.predict(images[:7]).logits, predictions.logits[:7], atol=1e-5)


def with_classifier(run, change):
  """``run`` with ``change`` applied to its classifier's parameters (numpy arrays)."""
  params = dict(run.variables['params'])
  params['fc'] = jax.tree.map(lambda p: change(np.array(p)), params['fc'])
  return dataclasses.replace(run, variables=dict(run.variables, params=params))


def test_a_model_whose_logits_are_all_equal_evaluates_at_chance(run):
  constant = with_classifier(run, np.zeros_like)
  result = constant.evaluate()
  # 10 classes, every one tied: a random order puts the label first 1 time in 10, in the top 5
  # half the time; the loss is ln 10.
  assert result['error_top1'] == pytest.approx(0.9, rel=1e-6)
  assert result['error_top5'] == pytest.approx(0.5, rel=1e-6)
  assert result['loss'] == pytest.approx(np.log(10), rel=1e-6)
  images, _ = raw_test_split()
  np.testing.assert_array_equal(constant.predict(images[:3]).labels, [[0, 1, 2, 3, 4]] * 3)


def nan_bias(bias):
  bias = bias.copy()
  bias[3] = np.nan
  return bias


def test_a_model_with_a_nan_logit_is_wrong_at_every_k_and_predicts_nothing(run):
  broken = with_classifier(run, lambda p: nan_bias(p) if p.ndim == 1 else p)
  result = broken.evaluate()
  assert (result['error_top1'], result['error_top5']) == (1.0, 1.0)
  images, _ = raw_test_split()
  predictions = broken.predict(images[:3])
  assert np.isnan(predictions.logits[:, 3]).all() and np.isfinite(predictions.logits[:, 4]).all()
  np.testing.assert_array_equal(predictions.labels, np.full((3, 5), -1))


def test_examples_are_labelled_raw_images_of_the_split(run):
  images, labels = run.examples(20)
  assert images.shape == (20, 8, 8, 1) and images.dtype == np.uint8
  all_images, all_labels = raw_test_split()
  for image, label in zip(images, labels):
    matches = np.flatnonzero(np.all(all_images == image, axis=(1, 2, 3)))
    assert label in all_labels[matches]


def test_curves_are_the_logged_scalars(run):
  curves = run.curves()
  assert curves['train_loss'][0].tolist() == [1, 2, 3, 4, 5]
  assert curves['eval_error_top1'][0].tolist() == [3, 5]
  results = run.results()
  assert [r['step'] for r in results] == [3, 5]
  assert [r['eval_error_top1'] for r in results] == pytest.approx(
      curves['eval_error_top1'][1].tolist())


def test_export_writes_flax_msgpack_that_loads_back(run, tmp_path):
  path = str(tmp_path / 'resnet20.msgpack')
  run.export(path, serving=False)
  with open(path, 'rb') as f:
    raw = flax.serialization.msgpack_restore(f.read())
  assert raw['format'] == 'resnet_jax.export/1'
  assert json.loads(raw['inference']['constants'])['label_names'] == list('0123456789')
  expected = flax.traverse_util.flatten_dict(jax.device_get(run.variables))
  restored = flax.traverse_util.flatten_dict(raw['variables'])
  assert restored.keys() == expected.keys()
  for key, value in expected.items():
    np.testing.assert_array_equal(restored[key], value)

  images = run.preprocess(raw_test_split()[0][:16])
  reference = run.model.apply(run.variables, images, train=False)
  for model_or_config in (run.model, run.config):
    model, variables = resnet_jax.load_exported(path, model_or_config)
    np.testing.assert_array_equal(model.apply(variables, images, train=False), reference)
  other = copy.deepcopy(run.config)
  other.model.name = 'resnet32'
  with pytest.raises(ValueError,
                     match=r'batch_stats/stage1_block4/bn1/mean missing; .* and \d+ more\.$'):
    resnet_jax.load_exported(path, other)


def main_py(*args, devices=1):
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  return subprocess.run([sys.executable, os.path.join(ROOT, 'main.py'), *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300)


def snapshot(directory):
  return {os.path.join(d, f): os.path.getmtime(os.path.join(d, f))
          for d, _, files in os.walk(directory) for f in files}


def test_eval_mode_on_four_devices_prints_the_recorded_evaluation_and_writes_nothing(workdir):
  before = snapshot(workdir)
  result = main_py(f'--workdir={workdir}', '--mode=eval', devices=4)
  assert result.returncode == 0, result.stderr[-5000:]
  [evaluation] = evaluated_lines(result.stdout)
  assert (evaluation['step'], evaluation['set'], evaluation['devices']) == (5, 'test', 4)
  recorded = recorded_eval(workdir, 5)
  # Errors are sums of 0/1 (no float32 logits tie here), exact in any order: the count of wrong
  # test digits; the loss is summed in another order (and printed to 4 digits).
  assert evaluation['wrong'] == round(recorded['error_top1'] * 297)
  assert evaluation['error_top1'] == round(100 * recorded['error_top1'], 2)
  assert evaluation['error_top5'] == round(100 * recorded['error_top5'], 2)
  assert evaluation['loss'] == pytest.approx(recorded['loss'], rel=1e-3)
  assert snapshot(workdir) == before


def test_eval_mode_without_a_checkpoint_exits_2(tmp_path):
  result = main_py(f'--workdir={tmp_path}', '--mode=eval')
  assert result.returncode == 2
  assert f"CheckpointError: '{tmp_path}' has no checkpoints/" in result.stderr


def test_the_package_imports_from_the_clones_parent_directory(tmp_path):
  # A clone is a folder named resnet_jax without __init__.py: from its parent, Python must still
  # import the installed package, not that folder as an empty namespace package.
  os.symlink(ROOT, tmp_path / 'resnet_jax')
  result = subprocess.run([sys.executable, '-c', 'import resnet_jax; print(resnet_jax.load_run)'],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0 and 'function load_run' in result.stdout, result.stderr[-2000:]
