"""Turns a sweep's runs into processes: on this host, as one SLURM array job, or on a TPU pod.

    local  (default) one run after another, or ``--parallel_runs=K`` at once, each on its own
           share of the host's GPUs (``CUDA_VISIBLE_DEVICES``)
    slurm  one ``sbatch`` array job, a task per run, each ``srun``-ing main.py over the nodes and
           GPUs it asks for; JAX's own SLURM detection joins the processes of a run. A value
           with a control character is refused before the script is written; a job that SLURM
           will never start (its pending reason says so) is cancelled at once, with the flag to
           change (``slurm_cluster`` asks the cluster)
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
import unicodedata
from typing import NamedTuple

from absl import app, flags, logging
from etils import epath

from experiments import slurm_cluster, sweeps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
# From a run to its main.py command.
# --------------------------------------------------------------------------------------------


def format_value(value) -> str:
  """A config value as ml_collections' --config.key=value flag parses it."""
  if isinstance(value, (tuple, list)):
    return '(' + ','.join(format_value(v) for v in value) + (',)' if len(value) == 1 else ')')
  return str(value)


def workdir(run: sweeps.Run, root: str) -> str:
  """``root/<run.name>``; ``root`` may be local or remote (``gs://bucket/runs``)."""
  return os.fspath(epath.Path(root) / run.name)


def command(run: sweeps.Run, root: str, python: str = 'python', main: str = 'main.py') -> list:
  """The argv that trains ``run`` into ``root/<run.name>``."""
  return [python, main, f'--config={run.config}', f'--workdir={workdir(run, root)}',
          *(f'--config.{k}={format_value(v)}' for k, v in run.overrides.items())]


def local_command(run: sweeps.Run, root: str) -> list:
  """``command`` with this Python and this checkout's main.py, for processes started here."""
  return command(run, root, python=sys.executable, main=os.path.join(ROOT, 'main.py'))


def log_path(log_dir: str, run: sweeps.Run) -> str:
  return os.path.join(log_dir, run.name.replace('/', '_') + '.log')


def default_log_dir(root: str, log_dir: str | None) -> str:
  """``log_dir``, else ``<root>/logs``; an absolute local path (the scheduler writes it)."""
  if log_dir is None:
    if '://' in root:
      raise app.UsageError(f'--root={root} is not a local directory: give --run_logs_dir, a local '
                           '(or shared) directory for the runs\' console output.')
    log_dir = os.path.join(root, 'logs')
  return os.path.abspath(log_dir)


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
# slurm: one array job, a task per run.
# --------------------------------------------------------------------------------------------


class SlurmResources(NamedTuple):
  """What each run (array task) asks SLURM for."""
  nodes: int = 1
  gpus_per_node: int = 1
  tasks_per_node: int = 0  # 0: one per GPU, or 1 without GPUs.
  max_running_tasks: int = 0  # 0: no limit.
  cpus_per_task: int = 8
  time: str | None = None
  time_limit_margin: int = 300
  partition: str | None = None
  account: str | None = None
  extra: tuple = ()  # More sbatch options, e.g. ('--constraint=h100',).

  def check(self) -> None:
    """Raises app.UsageError for requests SLURM or JAX cannot serve."""
    for name in ('nodes', 'cpus_per_task'):
      if getattr(self, name) < 1:
        raise app.UsageError(f'--{name}={getattr(self, name)} must be at least 1.')
    for name in ('gpus_per_node', 'tasks_per_node', 'max_running_tasks', 'time_limit_margin'):
      if getattr(self, name) < 0:
        raise app.UsageError(f'--{name}={getattr(self, name)} must not be negative.')
    if self.gpus_per_node and self.tasks_per_node not in (0, self.gpus_per_node):
      raise app.UsageError(
          f'--tasks_per_node={self.tasks_per_node} with --gpus_per_node={self.gpus_per_node}: '
          'under SLURM JAX gives each process one GPU (that of its SLURM_LOCALID), so a node '
          'runs one process per GPU; leave --tasks_per_node at 0.')
    check_script_values([('--time', self.time), ('--partition', self.partition),
                         ('--account', self.account),
                         *(('--sbatch_arg', option) for option in self.extra)])

  def processes_per_node(self) -> int:
    """One process per GPU: under SLURM, JAX gives each process the GPU of its SLURM_LOCALID."""
    return self.tasks_per_node or max(self.gpus_per_node, 1)


def check_script_values(values) -> None:
  """Raises app.UsageError for a pair (flag, value) of ``values`` whose value holds a control
  character: in a batch script a line break (or a carriage return) ends the line, and bash runs
  the rest."""
  for flag, value in values:
    if value is not None and any(unicodedata.category(c) == 'Cc' for c in str(value)):
      raise app.UsageError(f'{flag}={value!r} holds a control character (a line break, carriage '
                           'return, tab ...), which a batch script cannot carry: bash would run '
                           'what follows a line break as a command. Remove it.')


TASK_BODY = '''
# SIGTERM (preemption, `scontrol requeue`, scancel) reaches main.py from SLURM: it checkpoints
# at the next step and stops, and --requeue starts the task again, resuming from there. Near the
# time limit SLURM sends USR1 to this script (--signal): it sends the run SIGTERM, waits for its
# checkpoint, and requeues the task.
echo "Array task $SLURM_ARRAY_TASK_ID, job $SLURM_JOB_ID: $run (requeued \\
${SLURM_RESTART_COUNT:-0} times) on $SLURM_JOB_NUM_NODES node(s) $SLURM_JOB_NODELIST"
near_time_limit=0
trap 'near_time_limit=1; echo "Near the time limit: checkpointing."; \\
scancel --signal=TERM "$SLURM_JOB_ID"' USR1
srun --kill-on-bad-exit=1 "${argv[@]}" &
step=$!
status=0
wait "$step" || status=$?
while kill -0 "$step" 2>/dev/null; do  # A trapped signal ends `wait` early.
  status=0
  wait "$step" || status=$?
done
if (( near_time_limit )); then
  echo "Requeueing $run to resume from its checkpoint."
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
'''


def sbatch_script(sweep: str, runs: list[sweeps.Run], root: str, resources: SlurmResources,
                  log_dir: str) -> str:
  """The batch script of one array job: task i trains ``runs[i]``."""
  if not runs:
    raise ValueError('An array job needs at least one run.')
  resources.check()
  check_script_values([
      ('--sweep', sweep), *(('--sweep', text) for run in runs for text in (run.name, run.config)),
      ('--root', root), ('--run_logs_dir', log_dir),
      *(('--override', f'{key}={format_value(value)}') for run in runs
        for key, value in run.overrides.items()),
      ('this checkout', ROOT), ('its Python', sys.executable)])
  limit = f'%{resources.max_running_tasks}' if resources.max_running_tasks else ''
  options = [f'--job-name={sweep}', f'--array=0-{len(runs) - 1}{limit}',
             f'--nodes={resources.nodes}',
             f'--ntasks-per-node={resources.processes_per_node()}',
             f'--cpus-per-task={resources.cpus_per_task}']
  if resources.gpus_per_node:
    options.append(f'--gpus-per-node={resources.gpus_per_node}')
  options += [f'--{name}={value}' for name, value in (
      ('time', resources.time), ('partition', resources.partition),
      ('account', resources.account)) if value]
  options += [f'--output={os.path.join(log_dir, "%x_%A_%a.out")}', '--open-mode=append',
              '--requeue', f'--signal=B:USR1@{resources.time_limit_margin}',
              *resources.extra]
  cases = [f'  {i}) run={shlex.quote(run.name)}\n     argv=({shlex.join(local_command(run, root))})'
           ' ;;' for i, run in enumerate(runs)]
  return '\n'.join([
      '#!/bin/bash',
      f'# {shlex.quote(sweep)}: {len(runs)} runs into {shlex.quote(root)}, one array task each.',
      *(f'#SBATCH {shlex.quote(option)}' for option in options),
      'set -u',
      f'cd {shlex.quote(ROOT)}',
      'case "$SLURM_ARRAY_TASK_ID" in', *cases, 'esac',
  ]) + TASK_BODY


# SLURM's reasons for a pending job that no wait ends, and what each says of the job.
NEVER_STARTS = {
    'PartitionConfig': 'asks for more than its partition has or allows (nodes, CPUs, GPUs, time)',
    'PartitionNodeLimit': 'asks for more nodes than its partition allows',
    'PartitionTimeLimit': 'asks for more time than its partition allows: lower --time',
    'ReqNodeNotAvail': 'needs nodes that are not available (down, drained or reserved): choose '
                       'another --partition, or other nodes in --sbatch_arg',
    'BadConstraints': 'has constraints that no node meets: change them in --sbatch_arg',
}
RESOURCES = 'Resources'  # Waiting for nodes to free up: for ever where no node is large enough.
WATCH_INTERVAL_S = 5


def oversize_problems(resources: SlurmResources, nodes: list[slurm_cluster.Node]) -> list[str]:
  """Why no ``resources.nodes`` of ``nodes`` can hold a run's share of each node, with the flag to
  change; none where they can, or where no node is known."""
  if not nodes:
    return []
  processes = resources.processes_per_node()
  cpus, gpus = resources.cpus_per_task * processes, resources.gpus_per_node
  most_cpus, most_gpus = max(n.cpus for n in nodes), max(n.gpus for n in nodes)
  problems = []
  if cpus > most_cpus:
    problems.append(f'{processes} process(es) a node x --cpus_per_task={resources.cpus_per_task} '
                    f'is {cpus} CPUs a node, but its largest node has {most_cpus}: set '
                    f'--cpus_per_task={max(1, most_cpus // processes)}'
                    + (' and fewer processes a node' if processes > most_cpus else ''))
  if gpus > most_gpus:
    problems.append(f'--gpus_per_node={gpus}, but its nodes have at most {most_gpus} GPUs: set '
                    f'--gpus_per_node={most_gpus}')
  fitting = sum(n.cpus >= cpus and n.gpus >= gpus for n in nodes)
  if not problems and fitting < resources.nodes:
    problems.append(f'--nodes={resources.nodes}, but {fitting} of its nodes have {cpus} CPUs and '
                    f'{gpus} GPUs: ' + (f'set --nodes={fitting}' if fitting else
                                        'ask for less a node'))
  return problems


def never_starts(job: str, resources: SlurmResources) -> str | None:
  """Why SLURM will never start ``job`` (its pending reason, with the flags to change), or None
  while it may."""
  reasons = slurm_cluster.pending_reasons(job) & (NEVER_STARTS.keys() | {RESOURCES})
  if not reasons:
    return None
  problems = oversize_problems(resources, slurm_cluster.nodes(resources.partition))
  if not problems:
    reasons.discard(RESOURCES)
  if not reasons:
    return None
  why = '; '.join(f'{r}: it {NEVER_STARTS.get(r, "asks for more than any node has")}'
                  for r in sorted(reasons))
  partition = f'partition {resources.partition}' if resources.partition else 'default partition'
  sizes = f' On the {partition}: {"; ".join(problems)}.' if problems else ''
  return (f'SLURM will never start job {job}: it pends ({why}), so it is cancelled.{sizes} '
          'Change the request and submit the sweep again (finished runs are skipped).')


def submit(script: str, wait: bool, resources: SlurmResources) -> int:
  """``sbatch`` with the script on stdin, its job id on stdout; returns its exit status (with
  ``wait``: the array's). A job SLURM will never start is cancelled at once (and, while
  ``wait``-ing, whenever it comes to that), and the command ends with the reason."""
  sbatch = subprocess.Popen(['sbatch', *(['--wait'] if wait else []), '--parsable'],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  sbatch.stdin.write(script)
  sbatch.stdin.close()
  job = sbatch.stdout.readline().strip().split(';')[0]  # --parsable: 'job' or 'job;cluster'.
  if job:
    print(job, flush=True)
  while job:
    reason = never_starts(job, resources)
    if reason:
      slurm_cluster.cancel(job)
      sbatch.wait()
      sys.exit(reason)
    if sbatch.poll() is not None:
      break
    time.sleep(WATCH_INTERVAL_S)
  return sbatch.wait()


def warn_if_oversized(resources: SlurmResources) -> None:
  """Warns where ``resources`` ask for more than any node that ``sinfo`` lists here has."""
  problems = oversize_problems(resources, slurm_cluster.nodes(resources.partition))
  if problems:
    logging.warning('SLURM would never start this job: %s.', '; '.join(problems))


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
