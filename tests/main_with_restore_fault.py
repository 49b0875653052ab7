"""main.py with a checkpoint read fault injected into one process, as a test harness.

``RESTORE_FAULT=KIND:STEP:PROCESS[,KIND:STEP:PROCESS...]`` makes process PROCESS fail to read
the checkpoint of step STEP, the others reading it normally (a host's view of shared storage gone
bad):

* ``damaged``: a truncated array file (tensorstore's DATA_LOSS), every time;
* ``transient``: a storage outage (UNAVAILABLE: 503), every time;
* ``transient_once``: the same, on the first try only.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # pylint: disable=wrong-import-position
from absl import app  # pylint: disable=wrong-import-position

import main  # pylint: disable=wrong-import-position
from resnet_jax import checkpointing  # pylint: disable=wrong-import-position

ERRORS = {'damaged': 'DATA_LOSS: injected: array file truncated',
          'transient': 'UNAVAILABLE: injected: 503 Service Unavailable',
          'transient_once': 'UNAVAILABLE: injected: 503 Service Unavailable'}


def inject(faults: dict[tuple[int, int], str]) -> None:
  """Makes process p's reads of step s fail as ``faults[p, s]`` says."""
  read_step, failed = checkpointing.read_step, set()

  def faulty_read_step(reader, step, abstract_state):
    kind = faults.get((jax.process_index(), step))
    if kind and (kind != 'transient_once' or step not in failed):
      failed.add(step)
      raise ValueError(ERRORS[kind])
    return read_step(reader, step, abstract_state)

  checkpointing.read_step = faulty_read_step
  checkpointing.RETRY_DELAYS_S = (0.5, 0.5, 0.5)  # Shorter waits, the same number of tries.


if __name__ == '__main__':
  specs = [spec.split(':') for spec in os.environ['RESTORE_FAULT'].split(',')]
  inject({(int(process), int(step)): kind for kind, step, process in specs})
  app.run(main.main, flags_parser=main.parse_flags)
