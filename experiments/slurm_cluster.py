"""What a SLURM cluster holds and why a job waits, as ``sinfo`` and ``squeue`` tell it.

    nodes('gpu')            the nodes of partition 'gpu' (None: the default one): CPUs, GPUs
    pending_reasons('123')  why the tasks of job 123 that have not started wait, e.g.
                            {'PartitionConfig'}; empty once none is pending

Where SLURM does not answer (no ``sinfo``, an unknown partition), the answers are empty: what
the cluster cannot tell is not held against a job.
"""

import re
import subprocess
from typing import NamedTuple

TIMEOUT_S = 30
_GPUS = re.compile(r'\bgpu(?::[^:(,]+)?:(\d+)')  # gpu[:type]:count


class Node(NamedTuple):
  name: str
  cpus: int
  gpus: int


def _output(argv: list[str]) -> str:
  """The standard output of a SLURM command; '' where it fails or is not installed."""
  try:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
  except (OSError, subprocess.TimeoutExpired):
    return ''
  return done.stdout if done.returncode == 0 else ''


def gpus(gres: str) -> int:
  """The GPUs in sinfo's generic resources: 'gpu:8', 'gpu:h100:4(S:0-1),gpu:a100:2', '(null)'."""
  return sum(int(count) for count in _GPUS.findall(gres))


def nodes(partition: str | None = None) -> list[Node]:
  """The nodes of ``partition``, by default the cluster's default partition (sinfo's '*')."""
  listed = []
  for line in _output(['sinfo', '-h', '-N', '-o', '%P|%n|%c|%G']).splitlines():
    name, node, cpus, gres = line.split('|')
    if (name.rstrip('*') == partition) if partition else name.endswith('*'):
      listed.append(Node(node, int(cpus), gpus(gres)))
  return listed


def pending_reasons(job: str) -> set[str]:
  """Why the pending tasks of ``job`` wait (squeue's reason, its first word: 'ReqNodeNotAvail'
  of 'ReqNodeNotAvail, UnavailableNodes:n1')."""
  listed = _output(['squeue', '-h', '-j', job, '-t', 'PENDING', '-o', '%r'])
  return {line.split(',')[0].strip() for line in listed.splitlines() if line.strip()}


def cancel(job: str) -> None:
  subprocess.run(['scancel', job], capture_output=True, timeout=TIMEOUT_S, check=False)
