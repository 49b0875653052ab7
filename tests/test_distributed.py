"""Start-up: JAX's cluster detection, one process where there is no cluster; the stop that every
process agrees on whatever moves JAX's preemption counter. (A 4-host job found through SLURM's
variables: tests/test_pod.py.)"""

import os
import signal
import subprocess
import sys

import pytest

from tests.harness import ROOT, free_port

pytestmark = pytest.mark.e2e  # Every test starts processes.

START = '''
from absl import logging
logging.set_verbosity('info')
import jax
from resnet_jax.parallel import distributed
distributed.initialize(*{args})
print('RESULT', jax.process_index(), jax.process_count(), jax.distributed.is_initialized(),
      flush=True)
{then}
'''

CLUSTER_VARIABLES = ('SLURM_', 'OMPI_', 'TPU_', 'MEGASCALE_', 'KUBERNETES_', 'JAX_COORDINATOR',
                     'PMI_')


def start(args=(), env=None, background=False, then=''):
  """Runs ``distributed.initialize(*args)``, then the code ``then``, in a fresh process with no
  cluster variables."""
  clean = {k: v for k, v in os.environ.items() if not k.startswith(CLUSTER_VARIABLES)}
  clean.update(JAX_PLATFORMS='cpu', **(env or {}))
  cmd = [sys.executable, '-c', START.format(args=tuple(args), then=then)]
  if background:
    return subprocess.Popen(cmd, cwd=ROOT, env=clean, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
  return subprocess.run(cmd, cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60,
                        check=True)


def result(output):
  return output.split('RESULT ')[1].splitlines()[0].split()


def test_no_cluster_detected_is_one_process_and_no_distributed_service():
  run = start()
  assert result(run.stdout) == ['0', '1', 'False']
  assert 'No multi-host cluster detected' in run.stderr


# What orbax's CheckpointManager does at save(step) and in its finalize thread: it reports the
# step number to JAX's preemption sync point, the counter that JAX's own stop is decided by.
STOP_LOOP = '''
import os, signal
from orbax.checkpoint import utils as orbax_utils
from resnet_jax.guards import preemption
from resnet_jax.parallel import sharding
stop = preemption.StopRequest(sharding.create_mesh())
for call in range(1, 9):
  orbax_utils.reached_preemption(100 + 7 * call)
  if call == 3 and jax.process_index() in {signalled}:
    os.kill(os.getpid(), signal.SIGTERM)
  if stop.after_call():
    print('STOPPED AT CALL', call, flush=True)
    break
'''


def stopped_at(output) -> int:
  return int(output.split('STOPPED AT CALL ')[1].split()[0])


def test_one_process_stops_at_the_call_after_sigterm_whatever_moves_the_sync_point():
  # With JAX's sync point, orbax's step numbers moved it to step 100 + 7 x 3 + 1: the loop,
  # counting calls, would have stopped many calls late, or never.
  run = start((f'127.0.0.1:{free_port()}', 1, 0), then=STOP_LOOP.format(signalled={0}))
  assert stopped_at(run.stdout) == 3, run.stdout + run.stderr[-3000:]


def test_two_processes_stop_at_one_call_whether_one_or_both_are_signalled():
  for signalled in ({1}, {0, 1}):
    port = free_port()
    processes = [start((f'127.0.0.1:{port}', 2, i), background=True,
                       then=STOP_LOOP.format(signalled=signalled)) for i in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    for i, output in enumerate(outputs):
      assert result(output) == [str(i), '2', 'True'], output
    # The flags of call 3 are agreed by an all-reduce read at the end of call 4.
    assert [stopped_at(output) for output in outputs] == [4, 4], (signalled, outputs)


def test_ctrl_c_asks_for_the_stop_and_a_second_one_exits_at_once():
  code = '''
import signal
from resnet_jax.guards import preemption
from resnet_jax.parallel import sharding
stop = preemption.StopRequest(sharding.create_mesh())
print('BEFORE', stop.after_call(), flush=True)
signal.raise_signal(signal.SIGINT)
print('FIRST', stop.after_call(), flush=True)
signal.raise_signal(signal.SIGINT)
print('NOT REACHED', flush=True)
'''
  run = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, JAX_PLATFORMS='cpu'), check=False)
  assert 'BEFORE False' in run.stdout and 'FIRST True' in run.stdout, run.stderr[-3000:]
  assert 'NOT REACHED' not in run.stdout
  assert run.returncode == -signal.SIGINT, run.returncode
  assert 'Ctrl-C again stops at once' in run.stderr
