"""slurm: a sweep as one ``sbatch`` array job, a task per run, each ``srun``-ing main.py over the
nodes and GPUs it asks for; JAX's own SLURM detection joins the processes of a run. A value with a
control character is refused before the script is written; a job that SLURM will never start
(its pending reason says so) is cancelled at once, with the flag to change (``slurm_cluster``
asks the cluster).
"""

import os
import shlex
import subprocess
import sys
import time
import unicodedata
from typing import NamedTuple

from absl import app, logging

from experiments import slurm_cluster, sweeps
from experiments.run_commands import ROOT, format_value, local_command


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
