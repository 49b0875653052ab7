"""A simulated pod: main.py as 4 processes x 2 CPU devices on loopback (gloo).

The processes find each other through JAX's own cluster detection (SLURM's variables, as a
SLURM job step sets them; no --coordinator_address). Against 1 process x 8 devices, and through
preemption, kills and a checkpoint that one host cannot read. tests/test_slurm.py starts such a
run under a real SLURM instead.
"""

import os
import re
import shutil
import signal
import time

import numpy as np
import pytest

from resnet_jax import checkpointing
from tests.harness import (
  assert_same_run_to_round_off,
  final_params,
  free_port,
  leaves,
  logged_step,
  run_main,
  tiny_digits_flags,
  train_losses,
)

pytestmark = pytest.mark.e2e  # Every test starts processes.

PROCESSES, DEVICES_PER_PROCESS, STEPS = 4, 2, 12


def pod_flags(data_dir, **overrides):
  """12 steps of 32 images (4 per device), 4 data shards, a checkpoint every 2 steps (all kept)."""
  return tiny_digits_flags(data_dir, **{
      'dataset.num_shards': PROCESSES, 'total_steps': STEPS, 'checkpoint_every_steps': 2,
      'eval_every_steps': STEPS, 'keep_checkpoints': STEPS, 'optimizer.lr_boundaries': '(8,)',
      **overrides})



def slurm_env(port, process):
  """What a SLURM job step of PROCESSES tasks on one node sets for task ``process``."""
  return {'SLURM_JOB_ID': '4242', 'SLURM_STEP_NODELIST': 'localhost',
          'SLURM_NTASKS': str(PROCESSES), 'SLURM_PROCID': str(process),
          'SLURM_LOCALID': str(process), 'JAX_COORDINATOR_PORT': str(port)}


class Pod:
  """One launch of the PROCESSES processes, each logging to its own file."""

  def __init__(self, workdir, flags, logs, script='main.py', env=None):
    port = free_port()
    os.makedirs(logs, exist_ok=True)
    self.logs = [os.path.join(logs, f'process_{i}.log') for i in range(PROCESSES)]
    self.processes = []
    for i, log in enumerate(self.logs):
      with open(log, 'w') as output:
        self.processes.append(run_main(
            workdir, 'configs/digits.py', flags, devices=DEVICES_PER_PROCESS, background=True,
            script=script, output=output, env={**slurm_env(port, i), **(env or {})}))

  def output(self, process) -> str:
    with open(self.logs[process]) as f:
      return f.read()

  def wait_for_step(self, process, step, timeout=600):
    """Waits until ``process`` has logged a training step >= ``step``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
      if max([logged_step(line) or 0 for line in self.output(process).splitlines()] + [0]) >= step:
        return
      assert self.processes[process].poll() is None, self.output(process)[-3000:]
      time.sleep(0.2)
    raise TimeoutError(f'process {process} did not reach step {step}')

  def wait(self, timeout=600) -> list[str]:
    """Every process's output once all have exited."""
    for process in self.processes:
      process.wait(timeout=timeout)
    return [self.output(i) for i in range(PROCESSES)]

  def returncodes(self):
    return [p.returncode for p in self.processes]


def resumed_step(output) -> int:
  return int(output.split('Resumed from the checkpoint at step ')[1].split('.')[0])


def saved_at_sigterm(output) -> int:
  return int(re.search(r'Stopped on request: saved a checkpoint at step (\d+)', output)[1])


def checkpoint_steps(workdir):
  return sorted(int(s) for s in os.listdir(checkpointing.checkpoint_dir(workdir)) if s.isdigit())


@pytest.fixture(scope='module')
def one_process_of_eight(data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('one_process_of_eight'))
  run_main(workdir, 'configs/digits.py', pod_flags(data_dir), devices=8)
  return workdir


@pytest.fixture(scope='module')
def pod_uninterrupted(data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('pod_uninterrupted'))
  pod = Pod(workdir, pod_flags(data_dir), os.path.join(workdir, 'logs'))
  outputs = pod.wait()
  assert pod.returncodes() == [0] * PROCESSES, outputs
  return workdir, outputs


@pytest.fixture(scope='module')
def pod_preempted(data_dir, tmp_path_factory):
  """A pod run stopped by SIGTERM sent to process 2 alone: (workdir, outputs)."""
  workdir = str(tmp_path_factory.mktemp('pod_preempted'))
  pod = Pod(workdir, pod_flags(data_dir), os.path.join(workdir, 'logs'))
  pod.wait_for_step(2, 3)
  pod.processes[2].send_signal(signal.SIGTERM)
  outputs = pod.wait()
  assert pod.returncodes() == [0] * PROCESSES, outputs
  return workdir, outputs


def test_pod_of_four_hosts_computes_what_one_host_of_eight_devices_does(
    one_process_of_eight, pod_uninterrupted):
  workdir, outputs = pod_uninterrupted
  for i, output in enumerate(outputs):
    assert f'Process {i} of {PROCESSES}; {DEVICES_PER_PROCESS} local and 8 global devices' in output
  assert sorted(train_losses(workdir)) == list(range(1, STEPS + 1))
  assert_same_run_to_round_off(workdir, one_process_of_eight)


def test_sigterm_to_one_host_stops_all_four_at_one_step_with_one_checkpoint(pod_preempted):
  workdir, outputs = pod_preempted
  saved = {saved_at_sigterm(output) for output in outputs}
  assert len(saved) == 1, saved
  stop = saved.pop()
  assert 3 <= stop < STEPS
  assert checkpoint_steps(workdir)[-1] == stop
  # Periodic checkpoints (every 2 steps) came before; the preemption one is the last.
  assert [s for s in checkpoint_steps(workdir) if s % 2] in ([], [stop])


def test_a_checkpoint_one_host_cannot_reach_stops_every_host_and_moves_nothing(
    pod_preempted, data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(pod_preempted[0], workdir)
  before = checkpoint_steps(workdir)
  pod = Pod(workdir, pod_flags(data_dir), str(tmp_path / 'logs'),
            script='tests/main_with_restore_fault.py',
            env={'RESTORE_FAULT': f'transient:{before[-1]}:3'})
  outputs = pod.wait()
  assert pod.returncodes() == [2] * PROCESSES, outputs
  for output in outputs:
    assert (f'CheckpointError: The checkpoint at step {before[-1]} in ' in output
            and f'could not be read (process 3 of {PROCESSES}: unreadable)' in output), output
    assert 'Traceback' not in output
  assert outputs[3].count('retrying in') == 3  # Four tries, then the stop.
  assert checkpoint_steps(workdir) == before
  assert not os.path.exists(os.path.join(workdir, 'unreadable_checkpoints'))


def test_damaged_for_one_host_then_killed_then_resumed_gives_the_uninterrupted_params(
    pod_preempted, pod_uninterrupted, data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(pod_preempted[0], workdir)
  steps = checkpoint_steps(workdir)
  newest, previous = steps[-1], steps[-2]
  # Process 1 finds the newest checkpoint damaged; process 3 reads the one before it only at
  # the second try. All four set the newest aside and resume from the previous one.
  pod = Pod(workdir, pod_flags(data_dir), str(tmp_path / 'logs_faults'),
            script='tests/main_with_restore_fault.py',
            env={'RESTORE_FAULT': f'damaged:{newest}:1,transient_once:{previous}:3'})
  pod.wait_for_step(0, previous + 3)
  for process in pod.processes:  # Kill the pod without warning, after one more checkpoint.
    process.send_signal(signal.SIGKILL)
  outputs = pod.wait()
  assert {resumed_step(output) for output in outputs} == {previous}, outputs
  assert f'process 1 of {PROCESSES}: damaged' in outputs[0]
  assert os.listdir(os.path.join(workdir, 'unreadable_checkpoints')) == [str(newest)]

  pod = Pod(workdir, pod_flags(data_dir), str(tmp_path / 'logs_restart'))
  outputs = pod.wait()
  assert pod.returncodes() == [0] * PROCESSES, outputs
  assert len({resumed_step(output) for output in outputs}) == 1
  assert checkpoint_steps(workdir)[-1] == STEPS
  for got, want in zip(leaves(final_params(workdir)), leaves(final_params(pod_uninterrupted[0]))):
    np.testing.assert_array_equal(got, want)
