"""Turns a sweep's runs into processes: on this host, as one SLURM array job, or on a TPU pod.

    local  (default) one run after another, or ``--parallel_runs=K`` at once, each on its own
           share of the host's GPUs (``CUDA_VISIBLE_DEVICES``)
    slurm  one ``sbatch`` array job, a task per run (``slurm_launcher``)
    tpu    one ``gcloud compute tpus tpu-vm ssh --worker=all`` command per run, one after another

``--dry_run`` prints what would start (the commands, the batch script) and starts nothing; for
slurm it warns where the request is larger than any node that ``sinfo`` lists.
"""

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from typing import NamedTuple

from absl import app, flags, logging

from experiments import sweeps
from experiments.run_commands import (
  ROOT,
  command,
  default_log_dir,
  local_command,
  log_path,
)
from experiments.slurm_launcher import (
  SlurmResources,
  sbatch_script,
  submit,
  warn_if_oversized,
)

LAUNCHERS = ('local', 'slurm', 'tpu')

FLAGS = flags.FLAGS


def define_flags():
  """The launchers' command line flags (defined on demand, as experiments.run does)."""
  flags.DEFINE_enum('launcher', 'local', LAUNCHERS, 'Where the runs train: this host, a SLURM '
                    'array job, or a Cloud TPU pod slice.')
  flags.DEFINE_bool('dry_run', False, 'Print the commands (local, tpu) or the batch script '
                    '(slurm) and start nothing.')
  flags.DEFINE_string('run_logs_dir', None, 'Where each run\'s console output goes when it is not '
                      'this terminal (--parallel_runs > 1, slurm); default: <root>/logs.')
  # local
  flags.DEFINE_integer('parallel_runs', 1, 'local: runs at once, each on its own GPUs (the '
                       'host\'s GPUs split evenly); without GPUs they share the CPU.')
  # slurm
  flags.DEFINE_bool('wait', False, 'slurm: return when the array job ends (sbatch --wait); '
                    'non-zero if a run did not finish.')
  flags.DEFINE_integer('nodes', 1, 'slurm: nodes per run.')
  flags.DEFINE_integer('gpus_per_node', 1, 'slurm: GPUs per node; 0 for CPU nodes.')
  flags.DEFINE_integer('tasks_per_node', 0, 'slurm: processes per node; 0: one per GPU (how '
                       'JAX assigns GPUs under SLURM), or 1 on CPU nodes.')
  flags.DEFINE_integer('max_running_tasks', 0, 'slurm: at most this many runs at once (the '
                       'array\'s %K); 0: as many as the cluster gives.')
  flags.DEFINE_integer('cpus_per_task', 8, 'slurm: CPUs per process (input pipeline).')
  flags.DEFINE_string('time', None, 'slurm: time limit per run, e.g. 1-00:00:00; default: the '
                      'partition\'s. A run near its limit checkpoints and is requeued.')
  flags.DEFINE_integer('time_limit_margin', 300, 'slurm: seconds before the time limit at which '
                       'a run checkpoints, stops and requeues itself.')
  flags.DEFINE_string('partition', None, 'slurm: partition; default: the cluster\'s.')
  flags.DEFINE_string('account', None, 'slurm: account to charge.')
  flags.DEFINE_multi_string('sbatch_arg', [], 'slurm: more sbatch options, e.g. '
                            '--sbatch_arg=--constraint=h100 (repeatable).')
  # tpu
  flags.DEFINE_string('tpu', None, 'tpu: the TPU VM (pod slice) name.')
  flags.DEFINE_string('zone', None, 'tpu: its zone, e.g. us-central2-b.')
  flags.DEFINE_string('project', None, 'tpu: its Google Cloud project; default: gcloud\'s.')
  flags.DEFINE_string('tpu_repo_dir', 'resnet_jax', 'tpu: this repository on every TPU VM, '
                      'relative to the home directory there.')


# --------------------------------------------------------------------------------------------
# local: this host, K runs at once on their own GPUs.
# --------------------------------------------------------------------------------------------


def host_gpus() -> list[str]:
  """This host's GPUs: CUDA_VISIBLE_DEVICES where it is set, else those nvidia-smi lists."""
  visible = os.environ.get('CUDA_VISIBLE_DEVICES')
  if visible is not None:
    return [gpu for gpu in visible.split(',') if gpu.strip()]
  if shutil.which('nvidia-smi') is None:
    return []
  listed = subprocess.run(['nvidia-smi', '--query-gpu=index', '--format=csv,noheader'],
                          capture_output=True, text=True, check=False)
  return listed.stdout.split() if listed.returncode == 0 else []


def split_gpus(gpus: list[str], parallel_runs: int) -> list[str | None]:
  """One CUDA_VISIBLE_DEVICES value per run slot: the GPUs split into ``parallel_runs`` equal
  groups; ``None`` per slot where there are no GPUs (the runs share the CPU)."""
  if parallel_runs < 1:
    raise app.UsageError(f'--parallel_runs={parallel_runs} must be at least 1.')
  if not gpus:
    return [None] * parallel_runs
  if len(gpus) < parallel_runs:
    raise app.UsageError(f'--parallel_runs={parallel_runs} needs a GPU per run, but this host '
                         f'has {len(gpus)} ({",".join(gpus)}): lower --parallel_runs.')
  per_run = len(gpus) // parallel_runs
  if len(gpus) % parallel_runs:
    logging.warning('%d GPUs do not split evenly over %d runs: %d stay idle.', len(gpus),
                    parallel_runs, len(gpus) % parallel_runs)
  return [','.join(gpus[i * per_run:(i + 1) * per_run]) for i in range(parallel_runs)]


class Process(NamedTuple):
  name: str
  argv: list
  log: str | None  # None: this terminal.


def run_processes(processes: list[Process], slots: list[str | None]) -> list[str]:
  """Runs ``processes``, at most one per slot at a time, each with its slot's GPUs; returns the
  names of those that exited non-zero."""
  waiting, running, failed = list(processes), {}, []
  free = list(slots)
  while waiting or running:
    while waiting and free:
      process, gpus = waiting.pop(0), free.pop(0)
      env = dict(os.environ) if gpus is None else dict(os.environ, CUDA_VISIBLE_DEVICES=gpus)
      where = '' if gpus is None else f' on GPUs {gpus}'
      logging.info('Running %s%s%s: %s', process.name, where,
                   f' (output: {process.log})' if process.log else '', shlex.join(process.argv))
      if process.log:
        os.makedirs(os.path.dirname(process.log), exist_ok=True)
      # The child keeps its own copy of the log's descriptor; this one closes at once.
      with open(process.log, 'a') if process.log else contextlib.nullcontext() as output:
        popen = subprocess.Popen(process.argv, cwd=ROOT, env=env, stdout=output,
                                 stderr=subprocess.STDOUT if output else None)
      running[popen] = (process, gpus, time.time())
    popen = wait_any(running)
    process, gpus, start = running.pop(popen)
    free.append(gpus)
    logging.info('%s %s after %.0f s.', process.name,
                 f'failed (exit {popen.returncode})' if popen.returncode else 'finished',
                 time.time() - start)
    if popen.returncode:
      failed.append(process.name)
  return failed


def wait_any(running: dict) -> subprocess.Popen:
  """The first of the running processes to exit."""
  while True:
    for popen in running:
      if popen.poll() is not None:
        return popen
    time.sleep(0.5)


def local(runs: list[sweeps.Run], root: str, parallel_runs: int = 1,
          log_dir: str | None = None) -> list[str]:
  """Trains ``runs`` on this host, ``parallel_runs`` at a time; returns the names that failed.

  One at a time, a run prints to this terminal; several at once, each to its file in
  ``log_dir``.
  """
  slots = split_gpus(host_gpus(), parallel_runs)
  logs = default_log_dir(root, log_dir) if parallel_runs > 1 else None
  return run_processes([Process(run.name, local_command(run, root),
                                logs and log_path(logs, run)) for run in runs], slots)


# --------------------------------------------------------------------------------------------
# tpu: every host of a pod slice, one run after another.
# --------------------------------------------------------------------------------------------


def check_tpu(root: str, tpu: str | None, zone: str | None) -> None:
  if not tpu or not zone:
    raise app.UsageError('--launcher=tpu needs --tpu=NAME and --zone=ZONE of a TPU VM.')
  if '://' not in root:
    raise app.UsageError(f'--launcher=tpu needs a --root that every TPU host can write, e.g. '
                         f'gs://bucket/runs, not {root!r}.')


def tpu_commands(runs: list[sweeps.Run], root: str, tpu: str, zone: str,
                 project: str | None = None, repo_dir: str = 'resnet_jax') -> list[list[str]]:
  """One ``gcloud ... tpu-vm ssh --worker=all`` argv per run: main.py on every host at once."""
  check_tpu(root, tpu, zone)
  return [['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', tpu, f'--zone={zone}',
           *([f'--project={project}'] if project else []), '--worker=all',
           f'--command=cd {shlex.quote(repo_dir)} && {shlex.join(command(run, root))}']
          for run in runs]


def run_tpu_commands(runs: list[sweeps.Run], commands: list[list[str]]) -> list[str]:
  """Runs the commands one after another (each holds the whole slice); the names that failed."""
  return run_processes([Process(run.name, argv, None) for run, argv in zip(runs, commands)],
                       [None])


# --------------------------------------------------------------------------------------------
# From the flags.
# --------------------------------------------------------------------------------------------


def slurm_resources_from_flags() -> SlurmResources:
  return SlurmResources(
      nodes=FLAGS.nodes, gpus_per_node=FLAGS.gpus_per_node, tasks_per_node=FLAGS.tasks_per_node,
      max_running_tasks=FLAGS.max_running_tasks,
      cpus_per_task=FLAGS.cpus_per_task, time=FLAGS.time,
      time_limit_margin=FLAGS.time_limit_margin, partition=FLAGS.partition,
      account=FLAGS.account, extra=tuple(FLAGS.sbatch_arg))


def check_flags(root: str) -> None:
  """Raises app.UsageError for launcher flags that cannot work, before any run is looked at."""
  if FLAGS.launcher == 'slurm':
    slurm_resources_from_flags().check()
    default_log_dir(root, FLAGS.run_logs_dir)
    if not FLAGS.dry_run and shutil.which('sbatch') is None:
      raise app.UsageError('--launcher=slurm needs sbatch on the PATH: run on a SLURM login '
                           'node, or add --dry_run to print the batch script.')
  elif FLAGS.launcher == 'tpu':
    check_tpu(root, FLAGS.tpu, FLAGS.zone)
  else:
    split_gpus(host_gpus(), FLAGS.parallel_runs)
    if FLAGS.parallel_runs > 1:
      default_log_dir(root, FLAGS.run_logs_dir)


def launch_from_flags(sweep: str, runs: list[sweeps.Run], root: str) -> int | None:
  """Starts (or with --dry_run prints) ``runs`` as the flags say. Returns None where nothing ran
  to its end here (a dry run, a submission without --wait), else the number of failures the
  launcher saw (a process's or sbatch's non-zero exit)."""
  if FLAGS.launcher == 'slurm':
    log_dir = default_log_dir(root, FLAGS.run_logs_dir)
    resources = slurm_resources_from_flags()
    script = sbatch_script(sweep, runs, root, resources, log_dir)
    if FLAGS.dry_run:
      print(script)
      warn_if_oversized(resources)
      return None
    os.makedirs(log_dir, exist_ok=True)  # SLURM does not create it, and would fail the tasks.
    returncode = submit(script, FLAGS.wait, resources)
    if FLAGS.wait:
      return int(returncode != 0)
    if returncode:
      sys.exit(f'sbatch exited {returncode} (its message is above): nothing was submitted.')
    return None
  if FLAGS.launcher == 'tpu':
    commands = tpu_commands(runs, root, FLAGS.tpu, FLAGS.zone, FLAGS.project, FLAGS.tpu_repo_dir)
    if FLAGS.dry_run:
      print('\n'.join(shlex.join(argv) for argv in commands))
      return None
    return len(run_tpu_commands(runs, commands))
  if FLAGS.dry_run:
    slots = split_gpus(host_gpus(), FLAGS.parallel_runs)
    if FLAGS.parallel_runs > 1:
      print(f'# {FLAGS.parallel_runs} at a time, each on its own GPUs: '
            + ' | '.join(slot or 'the CPU' for slot in slots))
    print('\n'.join(shlex.join(local_command(run, root)) for run in runs))
    return None
  return len(local(runs, root, FLAGS.parallel_runs, FLAGS.run_logs_dir))
