"""Faults a long run meets: SIGKILL, SIGTERM, divergence, corrupt checkpoints and bad input."""

import os
import random
import re
import signal

import jax
import numpy as np
import pytest

from configs import digits
from resnet_jax import checkpointing, errors, events, workdirs
from resnet_jax.data import datasets
from tests.harness import (
  free_port,
  logged_step,
  process_args,
  run_main,
  tiny_digits_config,
  tiny_digits_flags,
)

STEPS = 12


def long_flags(data_dir, **overrides):
  """12 steps, a checkpoint every 2, logging every step."""
  return tiny_digits_flags(data_dir, **{'total_steps': STEPS, 'checkpoint_every_steps': 2,
                                        'eval_every_steps': STEPS, 'keep_checkpoints': 2,
                                        'optimizer.lr_boundaries': '(8,)', **overrides})


def final_leaves(workdir):
  variables, step = checkpointing.restore_variables(workdir)
  return step, [np.asarray(x) for x in jax.tree.leaves(variables)]


def snapshot(path):
  """Every file under path with its size and modification time (or None: no such path)."""
  if not os.path.exists(path):
    return None
  return {os.path.join(root, f): (os.path.getsize(os.path.join(root, f)),
                                  os.path.getmtime(os.path.join(root, f)))
          for root, _, files in os.walk(path) for f in files}


def signal_at_step(process, step, sig) -> list[str]:
  """Reads ``process``'s output until it has logged ``step``, then sends it ``sig``."""
  output = []
  for line in process.stdout:
    output.append(line)
    if (logged_step(line) or 0) >= step:
      process.send_signal(sig)
      break
  return output


def run_until_step(workdir, flags, step, sig):
  """Starts main.py, sends ``sig`` once it has logged ``step``, returns (exit code, output)."""
  process = run_main(workdir, 'configs/digits.py', flags, background=True)
  output = signal_at_step(process, step, sig)
  output.append(process.communicate(timeout=300)[0])
  return process.returncode, ''.join(output)


def saved_at_stop(output) -> int:
  return int(re.search(r'Stopped on request: saved a checkpoint at step (\d+)', output)[1])


@pytest.fixture(scope='module')
def uninterrupted(data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  run_main(workdir, 'configs/digits.py', long_flags(data_dir))
  return final_leaves(workdir)


@pytest.mark.e2e
def test_sigkill_twice_then_restart_gives_the_same_params_bit_for_bit(
    data_dir, uninterrupted, tmp_path):
  rng = random.Random()
  kill_steps = sorted(rng.sample(range(1, STEPS - 1), 2))
  for step in kill_steps:
    code, output = run_until_step(str(tmp_path), long_flags(data_dir), step, signal.SIGKILL)
    assert code == -signal.SIGKILL, output[-3000:]
  restart = run_main(str(tmp_path), 'configs/digits.py', long_flags(data_dir))
  # The killed run's lease does not block the restart: its process is gone, seen at once.
  assert 'its process is gone' in restart.stderr
  step, leaves = final_leaves(str(tmp_path))
  assert step == uninterrupted[0] == STEPS, kill_steps
  for got, want in zip(leaves, uninterrupted[1]):
    np.testing.assert_array_equal(got, want, err_msg=f'killed at steps {kill_steps}')


@pytest.mark.e2e
@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_saves_a_checkpoint_at_the_current_step(data_dir, tmp_path, sig):
  code, output = run_until_step(str(tmp_path), long_flags(data_dir, checkpoint_every_steps=100),
                                3, sig)
  assert code == 0, output[-3000:]
  saved = saved_at_stop(output)
  assert 3 <= saved < STEPS
  assert 'Traceback' not in output
  steps = sorted(int(s) for s in os.listdir(checkpointing.checkpoint_dir(str(tmp_path))))
  assert steps == [saved]  # No periodic checkpoint was due: this one is the stop's save.
  assert events.read_scalars(str(tmp_path))['train_loss'][0].max() == saved


@pytest.mark.e2e
def test_a_resumed_two_host_run_stops_all_hosts_at_one_step_whoever_is_signalled(
    data_dir, tmp_path):
  # Resumed runs, two steps per call and a checkpoint at every call: orbax reports each save's
  # step to JAX's preemption counter, the one a stop through JAX's sync point depends on.
  workdir, total = str(tmp_path), 400

  def run(signalled, until_step):
    flags = long_flags(data_dir, **{'total_steps': total, 'checkpoint_every_steps': 2,
                                    'eval_every_steps': 1000, 'dataset.num_shards': 2,
                                    'steps_per_call': 2, 'log_every_steps': 2})
    port = free_port()
    procs = [run_main(workdir, 'configs/digits.py', flags, background=True,
                      extra_args=process_args(port, i, 2)) for i in range(2)]
    early = [[] for _ in procs]
    for i in sorted(signalled):  # Each one signalled once it has logged the step.
      early[i] = signal_at_step(procs[i], until_step, signal.SIGTERM)
    outputs = [''.join(e) + p.communicate(timeout=300)[0] for e, p in zip(early, procs)]
    for p, out in zip(procs, outputs):
      assert p.returncode == 0, out[-3000:]
    saved = [saved_at_stop(out) for out in outputs]
    # Both at one step, within two calls of the signal (the call it met, the agreement's call).
    assert saved[0] == saved[1] and until_step <= saved[0] <= until_step + 6, (signalled, saved)
    assert str(saved[0]) in os.listdir(checkpointing.checkpoint_dir(workdir))
    return saved[0]

  first = run({1}, until_step=8)
  second = run({0, 1}, until_step=first + 8)
  resumed = run({0}, until_step=second + 8)
  assert first < second < resumed


@pytest.mark.e2e
def test_divergence_names_the_step_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
  # A learning rate of 1e30 makes the parameters overflow on the first update.
  flags = long_flags(data_dir, **{'optimizer.learning_rate': 1e30, 'optimizer.warmup_steps': 2,
                                  'optimizer.warmup_learning_rate': 0.02})
  result = run_main(str(tmp_path), 'configs/digits.py', flags, check=False)
  assert result.returncode == 2, result.stderr[-3000:]
  assert ('DivergenceError: The training loss or parameters became non-finite at step 3'
          in result.stderr)
  assert 'the last good checkpoint, step 2, is intact' in result.stderr
  step, leaves = final_leaves(str(tmp_path))
  assert step == 2 and all(np.isfinite(x).all() for x in leaves)


# Refused by the run's plan (``run_plan.resolve``) or when its data is opened, before anything
# is compiled or written.
PLAN_PROBLEMS = {
    'unknown model': ({'model.name': 'resnet21'},
                      "'resnet21' is not a model. Valid names: resnet20"),
    'batch vs devices': ({'batch_size': 30}, 'batch_size=30 is not divisible by the 4 devices'),
    'negative lr': ({'optimizer.learning_rate': -0.1}, 'learning_rate=-0.1 must be positive'),
    'zero lr': ({'optimizer.learning_rate': 0.0}, 'learning_rate=0.0 must be positive'),
    'unsorted boundaries': ({'optimizer.lr_boundaries': (4, 2)}, 'strictly increasing'),
    'crop too large': ({'dataset.name': 'cifar10', 'dataset.image_size': 40},
                       'image_size=40 does not fit cifar10'),
    'dataset offline': ({'dataset.name': 'cifar10', 'dataset.image_size': 32},
                        'tfds build cifar10'),
    'shards vs batch': ({'dataset.num_shards': 3}, 'num_shards=3 data shards must be'),
    'batch beyond split': ({'batch_size': 4000}, 'batch_size=4000 exceeds the'),
    'negative lr scaling': ({'optimizer.lr_reference_batch': -256},
                            'lr_reference_batch=-256 must be 0'),
}


@pytest.mark.parametrize('case', sorted(PLAN_PROBLEMS))
def test_the_plan_refuses_a_bad_config_with_a_message_that_says_what_to_do(case, data_dir,
                                                                           tmp_path):
  overrides, message = PLAN_PROBLEMS[case]
  config = tiny_digits_config(data_dir, **overrides)
  if case == 'dataset offline':
    config.dataset.data_dir = str(tmp_path / 'empty_tfds')
  with pytest.raises((errors.ConfigError, errors.DatasetNotAvailableError)) as refused:
    plan = datasets.plan_for(config, devices=4)
    datasets.open_dataset(plan)  # An unprepared dataset is refused here, before any compile.
  assert message in str(refused.value)


def test_workdir_check_ignores_how_a_step_executes_but_not_what_it_computes(tmp_path):
  workdir = str(tmp_path)
  saved = digits.get_config()
  saved.cpu_fusion_barriers = False
  workdirs.save_config(saved, workdir)
  workdirs.check_workdir(digits.get_config(), workdir)  # Barriers on: the same run.
  with pytest.raises(errors.ConfigError, match="model.name: 'resnet20' -> 'plain20'"):
    workdirs.check_workdir(digits.get_config('plain20'), workdir)


@pytest.mark.e2e
def test_bad_inputs_stop_main_with_a_message_and_leave_the_workdir_as_it_was(data_dir, tmp_path):
  existing = str(tmp_path / 'existing')
  run_main(existing, 'configs/digits.py', long_flags(data_dir, total_steps=2))
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  cases = {  # A flag, the workdir, the plan: each stage's refusal once.
      'mistyped field': (tmp_path / 'mistyped', {'optimiser.learning_rate': 0.1},
                         "Invalid --config override: 'optimiser'\nDid you mean \"optimizer\""),
      'different model': (existing, {'model.name': 'plain20'},
                          'holds a run of a different experiment'),
      'unwritable workdir': (blocker / 'run', {}, 'cannot be written'),
      'unknown model': (tmp_path / 'unknown', {'model.name': 'resnet21'},
                        "'resnet21' is not a model"),
  }
  before = {name: snapshot(str(workdir)) for name, (workdir, _, _) in cases.items()}
  processes = {
      name: run_main(str(workdir), 'configs/digits.py',
                     long_flags(data_dir, **{'total_steps': 2, **flags}), background=True)
      for name, (workdir, flags, _) in cases.items()}
  for name, process in processes.items():
    output = process.communicate(timeout=300)[0]
    workdir, _, message = cases[name]
    assert process.returncode != 0, (name, output[-2000:])
    assert message in output, (name, output[-2000:])
    assert 'Traceback' not in output, (name, output[-2000:])
    assert snapshot(str(workdir)) == before[name], name
