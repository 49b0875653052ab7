"""The sweep runner against a real SLURM scheduler (`.ci/slurm up` starts one on this machine).

A digits sweep of 2 nets x 2 seeds goes in as one array job and the report reads every run; a
run whose task `srun`s two processes finds them through SLURM's own variables and computes what
one process does; and a task stopped twice, by `scontrol requeue` and by the time limit's
warning, resumes each time and ends bit for bit where the sweep's uninterrupted run does.
"""

import json
import math
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.harness import (
  ROOT,
  assert_same_run_to_round_off,
  final_params,
  leaves,
  logged_step,
  tiny_digits_flags,
  train_losses,
)

SWEEP, STEPS = 'depth_study:digits', 20
SWEEP_RUNS = ['plain20/seed0', 'resnet20/seed0', 'plain20/seed1', 'resnet20/seed1']


def slurm_unavailable() -> str | None:
  """Why these tests cannot use SLURM here, or None where a node is up."""
  missing = [tool for tool in ('sbatch', 'srun', 'sinfo', 'scontrol', 'scancel')
             if shutil.which(tool) is None]
  if missing:
    return (f'SLURM is not installed ({", ".join(missing)} not found): `.ci/slurm up`, as root '
            'on Debian, installs and starts a one-machine cluster.')
  try:
    states = subprocess.run(['sinfo', '-h', '-o', '%T'], capture_output=True, text=True,
                            timeout=30, check=False)
  except subprocess.TimeoutExpired:
    return 'SLURM does not answer (sinfo timed out): `.ci/slurm up` starts it.'
  if states.returncode or not {'idle', 'mixed', 'allocated'} & set(states.stdout.split()):
    return (f'SLURM has no node up (sinfo: {(states.stdout + states.stderr).strip()!r}): '
            '`.ci/slurm up` starts one.')
  return None


UNAVAILABLE = slurm_unavailable()
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))]


def overrides(data_dir) -> list[str]:
  """key=value for the sweep's runs: tiny_digits_flags' recipe for STEPS steps, 2 data shards
  (the same batches in 1 process or 2), a checkpoint every 2 steps, all kept."""
  flags = tiny_digits_flags(data_dir, total_steps=STEPS, eval_every_steps=STEPS,
                            checkpoint_every_steps=2, keep_checkpoints=STEPS,
                            **{'dataset.num_shards': 2, 'optimizer.lr_boundaries': '(12,)'})
  return [flag.removeprefix('--config.') for flag in flags
          if not flag.startswith('--config.model.name=')]


@pytest.fixture(scope='module')
def jax_env(tmp_path_factory):
  """The environment that sbatch and srun hand the runs: JAX on ``devices`` CPU devices, and a
  compilation cache the runs share (seed 1 and each resume reuse seed 0's programs)."""
  cache = str(tmp_path_factory.mktemp('jax_cache'))

  def env(devices):
    return dict(os.environ, JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR=cache,
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
                JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0',
                XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  return env


def runner_argv(data_dir, *args):
  return [sys.executable, '-m', 'experiments.run', f'--sweep={SWEEP}', '--launcher=slurm',
          '--gpus_per_node=0', '--cpus_per_task=1', *args,
          *(f'--override={pair}' for pair in overrides(data_dir))]


def runner(data_dir, *args, env):
  return subprocess.run(runner_argv(data_dir, *args), cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=900, check=False)


def task_log(root, job, task=0) -> str:
  with open(os.path.join(root, 'logs', f'{SWEEP}_{job}_{task}.out')) as f:
    return f.read()


def console_errors(output: str) -> dict[str, dict[int, float]]:
  """{'train' or an eval set's name: {step: top-1 error}} from the console lines a run printed
  ('step 8/8 (100 %): loss 2.1, error 87.50 %, ...', 'step 8: test error 90.24 %, ...')."""
  errors = {}
  for step, error in re.findall(r'\] step (\d+)/\d+ \([^)]*\): loss [^,]*, error ([\d.]+) %',
                                output):
    errors.setdefault('train', {})[int(step)] = float(error) / 100
  for step, name, error in re.findall(r'\] step (\d+): (\S+) error ([\d.]+) %', output):
    errors.setdefault(name, {})[int(step)] = float(error) / 100
  return errors


@pytest.fixture(scope='module')
def sweep(data_dir, jax_env, tmp_path_factory):
  """The sweep submitted with --wait, two runs at a time: (root, the runner's result)."""
  root = str(tmp_path_factory.mktemp('sweep'))
  result = runner(data_dir, f'--root={root}', '--only=plain20,resnet20', '--seeds=2', '--wait',
                  '--max_running_tasks=2', env=jax_env(2))
  return root, result


def test_a_sweep_is_one_array_job_of_finished_runs_that_the_report_reads(
    sweep, data_dir, jax_env):
  root, result = sweep
  assert result.returncode == 0, result.stderr[-5000:]
  assert result.stderr.strip().splitlines()[-1].endswith(
      f'Finished sweep {SWEEP}: 4 runs (4 trained now) -> {root}; the report: python -m '
      f'experiments.report --root={root}')
  job = int(result.stdout.split()[0])  # sbatch --parsable: the array's job id.
  outputs = [task_log(root, job, task) for task in range(len(SWEEP_RUNS))]
  for task, (name, output) in enumerate(zip(SWEEP_RUNS, outputs)):
    assert re.search(rf'Array task {task}, job \d+: {name} \(requeued 0 times\)', output)
    net, seed = name.split('/seed')
    with open(os.path.join(root, name, 'config.json')) as f:
      config = json.load(f)
    assert (config['model']['name'], config['seed']) == (net, int(seed))

  report = subprocess.run([sys.executable, '-m', 'experiments.report', f'--root={root}',
                           '--nolayer_responses'], cwd=ROOT, env=jax_env(1),
                          capture_output=True, text=True, timeout=300, check=False)
  assert report.returncode == 0, report.stderr[-3000:]
  with open(os.path.join(root, 'results.json')) as f:
    results = json.load(f)
  assert sorted(results['runs']) == sorted(SWEEP_RUNS)
  for name, output in zip(SWEEP_RUNS, outputs):  # The report's numbers are what each run printed.
    printed = console_errors(output)  # Percentages with two decimals.
    assert results['runs'][name]['steps'] == STEPS
    assert results['runs'][name]['train_error'] == pytest.approx(printed['train'][STEPS],
                                                                 abs=5e-5)
    assert results['runs'][name]['test_error'] == pytest.approx(printed['test'][STEPS],
                                                                abs=5e-5)
  for net in ('plain20', 'resnet20'):
    errors = [results['runs'][f'{net}/seed{k}']['train_error'] for k in (0, 1)]
    summary = results['networks'][net]['train_error']
    assert (summary['n'], summary['best']) == (2, min(errors))
    assert summary['mean'] == pytest.approx(sum(errors) / 2)
    assert summary['std'] == pytest.approx(abs(errors[0] - errors[1]) / math.sqrt(2))
  with open(os.path.join(root, 'report.md')) as f:
    assert f'## {SWEEP}' in f.read()

  # Submitted again: every run is finished, so nothing is submitted.
  again = runner(data_dir, f'--root={root}', '--only=plain20,resnet20', '--seeds=2',
                 env=jax_env(2))
  assert again.returncode == 0 and again.stdout == '', again.stderr[-3000:]
  assert again.stderr.strip().endswith(
      f'Finished sweep {SWEEP}: all 4 runs had finished already -> {root}'), again.stderr[-3000:]
  assert report.stdout.strip() == (f'Report of 4 runs of 2 nets -> {root}/report.md '
                                   '(results.json beside it).')
  # A third seed: the array holds the two new runs only.
  script = runner(data_dir, f'--root={root}', '--only=plain20,resnet20', '--seeds=3',
                  '--dry_run', env=jax_env(2)).stdout
  assert '#SBATCH --array=0-1\n' in script
  assert re.findall(r'run=(\S+)', script) == ['plain20/seed2', 'resnet20/seed2']


@pytest.fixture(scope='module')
def two_task_run(data_dir, jax_env, tmp_path_factory):
  """resnet20/seed0 of the sweep as an array task of 2 processes (its srun's 2 tasks) of 1
  device each: (workdir, the task's output)."""
  root = str(tmp_path_factory.mktemp('two_tasks'))
  result = runner(data_dir, f'--root={root}', '--only=resnet20', '--seeds=1',
                  '--tasks_per_node=2', '--wait', env=jax_env(1))
  assert result.returncode == 0, result.stderr[-5000:]
  return os.path.join(root, 'resnet20', 'seed0'), task_log(root, int(result.stdout.split()[0]))


def test_two_srun_tasks_find_each_other_through_slurm_and_compute_what_one_process_does(
    sweep, two_task_run):
  workdir, output = two_task_run
  job, node = re.search(r'Array task 0, job (\d+): .* on 1 node\(s\) (\S+)', output).groups()
  for process in (0, 1):
    assert f'Process {process} of 2; 1 local and 2 global devices' in output
  # JAX's SLURM detection: the coordinator on the step's first node, its port from the job id.
  assert f'Connecting to JAX distributed service on {node}:{int(job) % 4096 + 61440}' in output
  assert sorted(train_losses(workdir)) == list(range(1, STEPS + 1))
  assert_same_run_to_round_off(workdir, os.path.join(sweep[0], 'resnet20', 'seed0'))


def recording_sbatch(tmp_path) -> tuple[str, pathlib.Path]:
  """A PATH whose sbatch writes its arguments to the returned file, then runs the real one."""
  calls, bin_dir = tmp_path / 'sbatch_calls', tmp_path / 'bin'
  bin_dir.mkdir()
  (bin_dir / 'sbatch').write_text(f'#!/bin/sh\necho "$@" >> {shlex.quote(str(calls))}\n'
                                  f'exec {shlex.quote(shutil.which("sbatch"))} "$@"\n')
  (bin_dir / 'sbatch').chmod(0o755)
  return f'{bin_dir}{os.pathsep}{os.environ["PATH"]}', calls


@pytest.mark.parametrize('flag', ['--root', '--partition'])
def test_a_line_break_in_a_flag_is_refused_before_sbatch_and_nothing_runs(
    flag, data_dir, jax_env, tmp_path):
  """A command after a line break, in a script comment (--root) or an #SBATCH line."""
  marker = tmp_path / 'injected'
  values = {'--root': str(tmp_path / 'runs'), '--partition': 'debug'}
  values[flag] += f'\ntouch {marker} #'
  path, calls = recording_sbatch(tmp_path)
  result = subprocess.run(
      runner_argv(data_dir, '--only=resnet20', '--seeds=1',
                  *(f'{name}={value}' for name, value in values.items())),
      cwd=ROOT, env=dict(jax_env(1), PATH=path), capture_output=True, text=True, timeout=120,
      check=False)
  subprocess.run(['scancel', *result.stdout.split()], check=False)  # Were one submitted.
  assert result.returncode != 0
  assert f'{flag}={values[flag]!r} holds a control character' in result.stderr, result.stderr
  assert not calls.exists()  # sbatch never ran: nothing was submitted.
  assert not marker.exists()


def test_a_job_no_node_can_hold_fails_within_a_minute_with_the_flag_to_change(
    data_dir, jax_env, tmp_path):
  """More CPUs a task than the node has: SLURM holds it (PartitionConfig) for ever."""
  cpus = len(os.sched_getaffinity(0))  # What .ci/slurm gives its one node (nproc).
  asked = f'--cpus_per_task={4 * cpus}'
  args = (f'--root={tmp_path}', '--only=resnet20', '--seeds=1', asked)
  oversized = (f'1 process(es) a node x {asked} is {4 * cpus} CPUs a node, but its largest node '
               f'has {cpus}: set --cpus_per_task={cpus}')
  start = time.monotonic()
  submission = subprocess.Popen(runner_argv(data_dir, *args, '--wait'), cwd=ROOT, env=jax_env(1),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
  try:
    output, errors = submission.communicate(timeout=120)
  except subprocess.TimeoutExpired:  # It waits for ever: stop it, and its sbatch.
    os.killpg(submission.pid, signal.SIGKILL)
    output, errors = submission.communicate()
  subprocess.run(['scancel', *output.split()], check=False)  # Were it left in the queue.
  assert submission.returncode == 1 and time.monotonic() - start < 60, errors[-3000:]
  job = output.split()[0]
  assert (f'SLURM will never start job {job}: it pends (PartitionConfig: it asks for more than '
          f'its partition has or allows (nodes, CPUs, GPUs, time)), so it is cancelled. On the '
          f'default partition: {oversized}.') in errors
  queued = subprocess.run(['squeue', '-h', '-j', job], capture_output=True, text=True,
                          check=False)
  assert queued.stdout.strip() == ''
  # --dry_run says so before anything is submitted.
  dry_run = runner(data_dir, *args, '--dry_run', env=jax_env(1))
  assert f'SLURM would never start this job: {oversized}.' in dry_run.stderr, dry_run.stderr


def wait_for_step(log, marker, step, submission, timeout=600) -> str:
  """The task's output after its last ``marker`` once a process there has logged ``step``."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    if os.path.exists(log):
      with open(log) as f:
        output = f.read()
      after = output.rpartition(marker)[2] if marker in output else ''
      if max([logged_step(line) or 0 for line in after.splitlines()] + [0]) >= step:
        return after
    assert submission.poll() is None, f'The job ended before step {step} after {marker!r}.'
    time.sleep(0.2)
  raise TimeoutError(f'No step {step} after {marker!r} in {log}.')


def start_again(task, timeout=300):
  """Starts a requeued task soon: SLURM would hold it for about 2 minutes first.

  Once the task is back in the queue and its node holds nothing of the old start, and 2 s on:
  the node refuses a start in the second it revoked the old start's credential.
  """
  deadline = time.time() + timeout
  while time.time() < deadline:
    job = subprocess.run(['scontrol', '-o', 'show', 'job', task], capture_output=True,
                         text=True, check=False).stdout
    nodes = subprocess.run(['scontrol', '-o', 'show', 'node'], capture_output=True, text=True,
                           check=False).stdout
    if 'JobState=PENDING' in job and 'COMPLETING' not in nodes:
      time.sleep(2)
      subprocess.run(['scontrol', 'update', f'JobId={task}', 'StartTime=now'], check=True)
      return
    time.sleep(0.5)
  raise TimeoutError(f'{task} was not requeued: {job}')


def test_a_requeued_task_resumes_from_its_checkpoint_bit_for_bit(
    sweep, data_dir, jax_env, tmp_path):
  root = str(tmp_path)
  with open(tmp_path / 'runner.err', 'w') as stderr:
    submission = subprocess.Popen(
        runner_argv(data_dir, f'--root={root}', '--only=resnet20', '--seeds=1', '--wait'),
        cwd=ROOT, env=jax_env(2), stdout=subprocess.PIPE, stderr=stderr, text=True)
  job = int(submission.stdout.readline())
  task, log = f'{job}_0', os.path.join(root, 'logs', f'{SWEEP}_{job}_0.out')
  try:
    # Preemption, as an administrator or a higher-priority job does it: SLURM sends SIGTERM.
    wait_for_step(log, '(requeued 0 times)', 2, submission)
    subprocess.run(['scontrol', 'requeue', task], check=True)
    start_again(task)
    # The time limit's warning: the USR1 that --signal=B:USR1@... sends the batch script.
    after = wait_for_step(log, '(requeued 1 times)', 1, submission)
    resumed = int(re.search(r'Resumed from the checkpoint at step (\d+)', after)[1])
    wait_for_step(log, '(requeued 1 times)', resumed + 2, submission)
    subprocess.run(['scancel', '--batch', '--signal=USR1', task], check=True)
    start_again(task)
    assert submission.wait(timeout=600) == 0, (tmp_path / 'runner.err').read_text()[-3000:]
  finally:
    subprocess.run(['scancel', task], check=False)
  output = task_log(root, job)
  assert '(requeued 2 times)' in output and 'Near the time limit: checkpointing.' in output
  assert 'Requeueing resnet20/seed0 to resume from its checkpoint.' in output
  stops = [int(s) for s in re.findall(r'Stopped on request: saved a checkpoint at step (\d+)',
                                      output)]
  resumes = [int(s) for s in re.findall(r'Resumed from the checkpoint at step (\d+)', output)]
  assert len(stops) == 2 and 2 <= stops[0] < stops[1] < STEPS and resumes == stops, output

  workdir = os.path.join(root, 'resnet20', 'seed0')
  uninterrupted = os.path.join(sweep[0], 'resnet20', 'seed0')
  assert train_losses(workdir) == train_losses(uninterrupted)  # Every step, to the bit.
  for got, want in zip(leaves(final_params(workdir)), leaves(final_params(uninterrupted))):
    np.testing.assert_array_equal(got, want)
