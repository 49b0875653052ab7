"""Start-up: JAX's cluster detection, one process where there is no cluster, and a warning where
SIGTERM cannot be agreed on. (A 4-host job found through SLURM's variables: tests/test_pod.py.)"""

import os
import subprocess
import sys

from tests.harness import ROOT, free_port

START = '''
from absl import logging
logging.set_verbosity('info')
import jax
from resnet_jax.parallel import distributed
distributed.initialize(*{args})
print('RESULT', jax.process_index(), jax.process_count(), jax.distributed.is_initialized(),
      distributed.preemption_sync_available(), flush=True)
'''

CLUSTER_VARIABLES = ('SLURM_', 'OMPI_', 'TPU_', 'MEGASCALE_', 'KUBERNETES_', 'JAX_COORDINATOR',
                     'PMI_')


def start(args=(), env=None, background=False):
  """Runs ``distributed.initialize(*args)`` in a fresh process with no cluster variables."""
  clean = {k: v for k, v in os.environ.items() if not k.startswith(CLUSTER_VARIABLES)}
  clean.update(JAX_PLATFORMS='cpu', **(env or {}))
  cmd = [sys.executable, '-c', START.format(args=tuple(args))]
  if background:
    return subprocess.Popen(cmd, cwd=ROOT, env=clean, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
  return subprocess.run(cmd, cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60,
                        check=True)


def result(output):
  return output.split('RESULT ')[1].split()


def test_no_cluster_detected_is_one_process_and_no_distributed_service():
  run = start()
  assert result(run.stdout) == ['0', '1', 'False', 'False']
  assert 'No multi-host cluster detected' in run.stderr
  assert 'SIGTERM will NOT save' not in run.stderr


def test_processes_without_preemption_sync_say_sigterm_will_not_checkpoint():
  port = free_port()
  processes = [start((f'127.0.0.1:{port}', 2, i), background=True,
                     env={'JAX_ENABLE_PREEMPTION_SERVICE': 'false'}) for i in range(2)]
  outputs = [p.communicate(timeout=120)[0] for p in processes]
  for i, output in enumerate(outputs):
    assert result(output) == [str(i), '2', 'True', 'False'], output
    assert 'This run has 2 processes but no preemption sync point' in output
    assert 'SIGTERM will NOT save a checkpoint' in output
