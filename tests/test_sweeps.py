"""Sweeps and their runner: expansion, --print_commands, skipping finished and resuming runs."""

import json
import os
import subprocess
import sys

import pytest

from experiments import launchers, report, report_runs, run, sweeps
from resnet_jax import checkpointing, events, learning_rate
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
    assert learning_rate.network_warmup_steps(config) == (400 if r.name == 'resnet110' else 0)


def test_depth_study_cifar100_runs_figure_6s_nets_on_cifar100():
  runs = sweeps.get_sweep('depth_study:cifar100')
  assert [r.name for r in runs] == [r.name for r in sweeps.get_sweep('depth_study:cifar10')]
  for r in runs:
    config = run.load_config(r)
    assert (config.model.name, config.dataset.name, config.total_steps) == (
        r.name, 'cifar100', 64_000)


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
  return subprocess.run([sys.executable, '-m', 'experiments.run', *args], cwd=ROOT, check=False,
                        capture_output=True, text=True, timeout=120)


def test_every_sweep_has_a_default_number_of_seeds():
  assert set(sweeps.DEFAULT_SEEDS) == set(sweeps.SWEEPS)
  assert all(n >= 1 for n in sweeps.DEFAULT_SEEDS.values())
  # Table 6 gives ResNet-110 over 5 runs; the digits study is documented with 3 seeds.
  assert sweeps.DEFAULT_SEEDS['cifar_1202'] == 5
  assert sweeps.DEFAULT_SEEDS['depth_study:digits'] == 3


def test_with_seeds_gives_each_net_a_run_per_seed_seed_by_seed():
  nets = [sweeps.Run('a', 'configs/x.py:a', {'lr': 1}), sweeps.Run('b', 'configs/x.py:b', {})]
  assert sweeps.with_seeds(nets, 2) == [
      sweeps.Run('a/seed0', 'configs/x.py:a', {'lr': 1, 'seed': 0}),
      sweeps.Run('b/seed0', 'configs/x.py:b', {'seed': 0}),
      sweeps.Run('a/seed1', 'configs/x.py:a', {'lr': 1, 'seed': 1}),
      sweeps.Run('b/seed1', 'configs/x.py:b', {'seed': 1})]
  assert nets[0].overrides == {'lr': 1}  # The sweep's own runs are left as they were.
  with pytest.raises(ValueError, match='at least 1'):
    sweeps.with_seeds(nets, 0)


@pytest.mark.e2e
def test_print_commands():
  result = cli('--sweep=shortcuts', '--root=gs://bucket/my runs', '--print_commands',
               '--override=dataset.data_dir=gs://bucket/tfds',
               '--override=optimizer.lr_boundaries=(30,60)')
  assert result.returncode == 0, result.stderr
  flags = ("--config.dataset.data_dir=gs://bucket/tfds "
           "'--config.optimizer.lr_boundaries=(30,60)' --config.seed=0")
  assert result.stdout.splitlines() == [
      f"python main.py --config=configs/imagenet.py:resnet34,{o} "
      f"'--workdir=gs://bucket/my runs/resnet34_{o}/seed0' {flags}" for o in 'ABC']


@pytest.mark.e2e
def test_print_commands_with_seeds():
  result = cli('--sweep=cifar_1202', '--root=/runs', '--print_commands', '--seeds=2')
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines() == [
      f'python main.py --config=configs/cifar10.py:{net} --workdir=/runs/{net}/seed{seed} '
      f'--config.seed={seed}' for seed in (0, 1) for net in ('resnet110', 'resnet1202')]


@pytest.mark.parametrize('args, message', [
    (['--seeds=0'], 'at least 1'),
    (['--override=seed=3'], 'use --seeds=N'),
])
@pytest.mark.e2e
def test_bad_seeds_are_usage_errors(args, message):
  result = cli('--sweep=cifar_1202', '--root=/runs', '--print_commands', *args)
  assert result.returncode != 0 and message in result.stderr, result.stderr


@pytest.mark.e2e
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


@pytest.mark.e2e
def test_runner_resumes_unfinished_and_skips_finished_runs_seed_by_seed(data_dir, tmp_path,
                                                                        monkeypatch, capfd):
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  root = str(tmp_path)
  seeded = lambda seeds, **overrides: sweeps.with_seeds([tiny_run(data_dir, **overrides)], seeds)
  # Two interrupted runs, seeds 0 and 1: 3 of 5 steps done, each in its own workdir.
  assert run.run_sweep('test', seeded(2, total_steps=3), root) == []
  assert sorted(os.listdir(os.path.join(root, 'tiny'))) == ['seed0', 'seed1']
  configs = [json.loads((tmp_path / 'tiny' / f'seed{k}' / 'config.json').read_text())
             for k in (0, 1)]
  assert [c['seed'] for c in configs] == [0, 1]
  first_losses = [events.read_scalars(os.path.join(root, 'tiny', f'seed{k}'))['train_loss'][1][0]
                  for k in (0, 1)]
  assert first_losses[0] != first_losses[1]  # Another seed, another initialisation and order.
  assert not any(run.is_finished(r, root) for r in seeded(2, total_steps=5))

  # Seed 0 resumes to the end; seed 1 stays interrupted.
  assert run.run_sweep('test', seeded(1, total_steps=5), root) == []
  assert 'Resumed from the checkpoint at step 3' in capfd.readouterr().err
  workdir = os.path.join(root, 'tiny', 'seed0')
  steps, _ = events.read_scalars(workdir)['train_loss']
  assert sorted(steps.tolist()) == [1, 2, 3, 4, 5]
  assert [run.is_finished(r, root) for r in seeded(2, total_steps=5)] == [True, False]

  # Finished: no process is started.
  monkeypatch.setattr(launchers.subprocess, 'Popen',
                      lambda *a, **k: pytest.fail('started a process'))
  assert run.run_sweep('test', seeded(1, total_steps=5), root) == []
  # Epoch-based durations: 0.1 epoch = round(4.6) = 5 steps (done), 0.15 = round(6.9) = 7.
  assert run.is_finished(seeded(1, total_steps=0, total_epochs=0.1)[0], root)
  assert not run.is_finished(seeded(1, total_steps=0, total_epochs=0.15)[0], root)
  manager = checkpointing.create_manager(workdir, read_only=True)
  assert manager.latest_step() == 5
  manager.close()
  # The report reads each seed's run, its seed from the config that training wrote.
  results = report.write_report(root, with_layer_responses=False)
  assert {name: (r['seed'], r['steps']) for name, r in results['runs'].items()} == {
      'tiny/seed0': (0, 5), 'tiny/seed1': (1, 3)}
  assert results['networks']['tiny']['seeds'] == [0, 1]


def test_sweep_root_in_a_bucket_is_written_and_read_through_epath(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # Plain os calls on 'gs://bucket/...' would write a local 'gs:'.
  bucket = tmp_path / 'bucket'
  root = 'gs://bucket/studies'
  with bucket_at(bucket, monkeypatch):
    for name in ('depth_study:digits', 'cifar_1202', 'depth_study:digits'):
      run.record_sweep(root, name)
    assert not run.is_finished(tiny_run('/unused'), root)  # No workdir in the bucket yet.
    digits_runs = {r.name: None for r in sweeps.get_sweep('depth_study:digits')}
    studies = report_runs.studies(root, digits_runs)
  assert json.loads((bucket / 'studies' / sweeps.SWEEPS_FILE).read_text()) == [
      'depth_study:digits', 'cifar_1202']
  assert not (tmp_path / 'gs:').exists()
  assert studies == {'depth_study:digits': list(digits_runs)}
