"""Sweeps and their runner: expansion, --print_commands, skipping finished and resuming runs."""

import json
import os
import subprocess
import sys

import pytest

from experiments import report, run, sweeps
from resnet_jax import checkpointing, config_lib, events
from tests.harness import ROOT, bucket_at


def test_depth_study_cifar10_is_figure_6():
  runs = sweeps.get_sweep('depth_study:cifar10')
  assert [r.name for r in runs] == ['plain20', 'plain32', 'plain44', 'plain56', 'resnet20',
                                    'resnet32', 'resnet44', 'resnet56', 'resnet110']
  for r in runs:
    config = run.load_config(r)
    assert config.model.name == r.name and config.dataset.name == 'cifar10'
    # The paper's recipe: 64k iterations of 128, lr 0.1 /10 at 32k and 48k.
    assert (config.total_steps, config.batch_size) == (64_000, 128)
    assert tuple(config.optimizer.lr_boundaries) == (32_000, 48_000)
    # Only ResNet-110 warms up at 0.01 for 400 iterations.
    assert config_lib.warmup_steps(config) == (400 if r.name == 'resnet110' else 0)


def test_imagenet_sweeps_use_the_papers_shortcut_options():
  shortcut = lambda name: {r.name: run.load_config(r).model.shortcut
                           for r in sweeps.get_sweep(name)}
  assert shortcut('imagenet_plain_vs_residual') == {
      'plain18': None, 'plain34': None, 'resnet18': 'A', 'resnet34': 'A'}
  assert shortcut('shortcuts') == {'resnet34_A': 'A', 'resnet34_B': 'B', 'resnet34_C': 'C'}
  models = {r.name: run.load_config(r).model.name for r in sweeps.get_sweep('imagenet_deep')}
  assert models == {'resnet50': 'resnet50', 'resnet101': 'resnet101', 'resnet152': 'resnet152'}
  assert [run.load_config(r).model.name for r in sweeps.get_sweep('cifar_1202')] == [
      'resnet110', 'resnet1202']


def test_digits_depth_study_compares_plain_and_residual_at_20_and_56_layers():
  names = {run.load_config(r).model.name for r in sweeps.get_sweep('depth_study:digits')}
  assert {'plain20', 'plain56', 'resnet20', 'resnet56'} <= names


def test_unknown_sweep_lists_the_valid_ones():
  with pytest.raises(ValueError, match='depth_study:digits.*imagenet_deep'):
    sweeps.get_sweep('depth_study:mnist')


def cli(*args):
  return subprocess.run([sys.executable, '-m', 'experiments.run', *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)


def test_print_commands():
  result = cli('--sweep=shortcuts', '--root=gs://bucket/my runs', '--print_commands',
               '--override=dataset.data_dir=gs://bucket/tfds',
               '--override=optimizer.lr_boundaries=(30,60)')
  assert result.returncode == 0, result.stderr
  flags = ("--config.dataset.data_dir=gs://bucket/tfds "
           "'--config.optimizer.lr_boundaries=(30,60)'")
  assert result.stdout.splitlines() == [
      f"python main.py --config=configs/imagenet.py:resnet34,{o} "
      f"'--workdir=gs://bucket/my runs/resnet34_{o}' {flags}" for o in 'ABC']


def test_unknown_sweep_is_a_usage_error():
  result = cli('--sweep=nope', '--root=/tmp/unused')
  assert result.returncode != 0
  assert 'Valid sweeps: depth_study:cifar10' in result.stderr


def tiny_run(data_dir, **overrides):
  """ResNet-20 on digits, batch 32 (46 steps per epoch of 1,500 images), a checkpoint each step."""
  flags = {'dataset.data_dir': data_dir, 'batch_size': 32, 'eval_batch_size': 100,
           'total_epochs': 0, 'total_steps': 3, 'log_every_steps': 1, 'eval_every_steps': 100,
           'checkpoint_every_steps': 1}
  return sweeps.Run('tiny', 'configs/digits.py:resnet20', {**flags, **overrides})


def test_runner_resumes_unfinished_and_skips_finished_runs(data_dir, tmp_path, monkeypatch,
                                                           capfd):
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  root = str(tmp_path)
  workdir = os.path.join(root, 'tiny')
  # An interrupted run: 3 of 5 steps done.
  assert run.run_sweep('test', [tiny_run(data_dir, total_steps=3)], root) == []
  assert not run.is_finished(tiny_run(data_dir, total_steps=5), root)

  assert run.run_sweep('test', [tiny_run(data_dir, total_steps=5)], root) == []
  assert 'Resumed from the checkpoint at step 3' in capfd.readouterr().err
  steps, _ = events.read_scalars(workdir)['train_loss']
  assert sorted(steps.tolist()) == [1, 2, 3, 4, 5]

  # Finished: no process is started.
  monkeypatch.setattr(run.subprocess, 'run', lambda *a, **k: pytest.fail('started a process'))
  assert run.run_sweep('test', [tiny_run(data_dir, total_steps=5)], root) == []
  # Epoch-based durations: 0.1 epoch = round(4.6) = 5 steps (done), 0.15 = round(6.9) = 7.
  assert run.is_finished(tiny_run(data_dir, total_steps=0, total_epochs=0.1), root)
  assert not run.is_finished(tiny_run(data_dir, total_steps=0, total_epochs=0.15), root)
  manager = checkpointing.create_manager(workdir, read_only=True)
  assert manager.latest_step() == 5
  manager.close()


def test_sweep_root_in_a_bucket_is_written_and_read_through_epath(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # Plain os calls on 'gs://bucket/...' would write a local 'gs:'.
  bucket = tmp_path / 'bucket'
  root = 'gs://bucket/studies'
  with bucket_at(bucket, monkeypatch):
    for name in ('depth_study:digits', 'cifar_1202', 'depth_study:digits'):
      run.record_sweep(root, name)
    assert not run.is_finished(tiny_run('/unused'), root)  # No workdir in the bucket yet.
    digits_runs = {r.name: None for r in sweeps.get_sweep('depth_study:digits')}
    studies = report.studies(root, digits_runs)
  assert json.loads((bucket / 'studies' / sweeps.SWEEPS_FILE).read_text()) == [
      'depth_study:digits', 'cifar_1202']
  assert not (tmp_path / 'gs:').exists()
  assert studies == {'depth_study:digits': list(digits_runs)}
