"""Runs main.py the way a user does, on simulated CPU devices, and reads back what it wrote."""

import contextlib
import os
import re
import socket
import subprocess
import sys

import jax
import numpy as np
from etils import epath

from resnet_jax import checkpointing, events, learning_rate, run_plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_digits(data_dir, overrides) -> dict:
  fields = {
      'model.name': 'resnet20', 'dataset.data_dir': data_dir, 'batch_size': 32,
      'eval_batch_size': 64, 'total_epochs': 0.0, 'total_steps': 5, 'log_every_steps': 1,
      'eval_every_steps': 3, 'checkpoint_every_steps': 3, 'optimizer.lr_boundaries': (4,),
      'optimizer.lr_boundaries_unit': 'steps', 'optimizer.learning_rate': 0.02,
  }
  fields.update(overrides)
  return fields


def tiny_digits_flags(data_dir, **overrides):
  """A 5-step digits run of ResNet-20 at a gentle rate (rounding stays small), logging each step."""
  return [f'--config.{k}={v}' for k, v in _tiny_digits(data_dir, overrides).items()]


def tiny_digits_config(data_dir, **overrides):
  """``configs/digits.py`` with the fields of ``tiny_digits_flags``, for a run in this process;
  ``overrides`` by dotted name, e.g. ``**{'optimizer.learning_rate': 0.1}``."""
  from configs import digits  # pylint: disable=import-outside-toplevel
  config = digits.get_config()
  config.update_from_flattened_dict(_tiny_digits(data_dir, overrides))
  return config


@contextlib.contextmanager
def bucket_at(local_dir, monkeypatch):
  """Serves ``gs://bucket/...`` from ``local_dir``, through etils' own epath test double.

  With TensorFlow installed, epath hands gs:// to TensorFlow's GCS client before its double;
  that choice is switched off here so the double serves every call.
  """

  def redirected(original_fn, *args, **kwargs):
    return original_fn(*(os.fspath(a).replace('gs://bucket', str(local_dir))
                         if isinstance(a, str | os.PathLike) else a for a in args), **kwargs)

  monkeypatch.setattr(epath.gpath, '_is_tf_installed', lambda: False)
  names = ('open', 'exists', 'isdir', 'listdir', 'glob', 'makedirs', 'mkdir', 'stat', 'remove',
           'rename', 'replace')
  with epath.testing.mock_epath(**dict.fromkeys(names, redirected)):
    yield


def free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def process_args(port, process_id, num_processes):
  """main.py's flags for one process of a multi-process run coordinated on 127.0.0.1:port."""
  return [f'--coordinator_address=127.0.0.1:{port}', f'--num_processes={num_processes}',
          f'--process_id={process_id}']


def run_main(workdir, config, flags, devices=1, extra_args=(), check=True, env=None,
             background=False, script='main.py', output=subprocess.PIPE):
  """Runs main.py (or ``script``) on ``devices`` CPU devices; a Popen when ``background``,
  its output merged and sent to ``output`` (a pipe, or an open file)."""
  env = dict(os.environ, **(env or {}))
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  env['JAX_PLATFORMS'] = 'cpu'
  cmd = [sys.executable, os.path.join(ROOT, script), f'--config={config}',
         f'--workdir={workdir}', *flags, *extra_args]
  if background:
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
                            text=True)
  result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
  if check and result.returncode:
    raise AssertionError(f'main.py failed ({result.returncode}):\n{result.stderr[-5000:]}')
  return result


def script_json(script: str, devices: int):
  """What the Python ``script`` prints as JSON on its last line, run on ``devices`` CPU devices."""
  import json  # pylint: disable=import-outside-toplevel
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  result = subprocess.run([sys.executable, '-c', script], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True, timeout=600)
  return json.loads(result.stdout.strip().splitlines()[-1])


def logged_step(line):
  """The step of a console line that logs training metrics ('] step 23/368 (6 %): loss ...'),
  else None."""
  found = re.search(r'\] step (\d+)/\d+ \(', line)
  return int(found.group(1)) if found else None


def train_losses(workdir):
  """{step: train_loss} from the run's TensorBoard events."""
  steps, values = events.read_scalars(workdir)['train_loss']
  return dict(zip(steps.tolist(), values.tolist()))


def final_params(workdir):
  variables, _ = checkpointing.restore_variables(workdir)
  return variables


def leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def assert_same_run_to_round_off(workdir, reference, steps=4):
  """The run in ``workdir`` computed what the one in ``reference`` did with other processes or
  devices: the losses of its first ``steps`` steps, and the checkpoint at ``steps``.

  Float round-off differs between the two (where the all-reduces sum), and on a freshly
  initialised net it grows several-fold a step from step 5 on (BatchNorm of near-constant
  channels); so the comparison is over the first 4 steps, and their checkpoint.
  """
  got, want = train_losses(workdir), train_losses(reference)
  assert got.keys() == want.keys(), (got, want)
  for step in range(1, steps + 1):  # Each step's loss depends on which images make its batch.
    assert abs(got[step] - want[step]) <= 1e-5 * abs(want[step]), (step, got, want)
  got_variables, _ = checkpointing.restore_variables(workdir, step=steps)
  want_variables, _ = checkpointing.restore_variables(reference, step=steps)
  for name in ('batch_stats', 'params'):
    for x, y in zip(leaves(got_variables[name]), leaves(want_variables[name])):
      np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5, err_msg=name)


def tiny_step_inputs(channels: int):
  """A ResNet-20 with one block per stage, SGD at lr 0.1, its fresh state and a batch of four
  random 8x8 images: ``(model, tx, state, batch)`` for tests of a single train step."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel

  from resnet_jax import models, steps  # pylint: disable=import-outside-toplevel
  model = models.create_model('resnet20', 10, stage_sizes=(1, 1, 1))
  tx = optax.sgd(0.1)
  batch = {'image': jax.random.normal(jax.random.key(0), (4, 8, 8, channels)),
           'label': jnp.array([0, 1, 2, 3])}
  return model, tx, steps.init_train_state(model, tx, jax.random.key(1), (8, 8, channels)), batch


def rate_of(config, steps_per_epoch: int) -> learning_rate.LearningRate:
  """The learning rate of ``config`` for an epoch of ``steps_per_epoch`` steps, its durations
  resolved as ``run_plan.resolve`` resolves them."""
  in_steps = lambda steps, epochs: run_plan.in_steps(steps, epochs, steps_per_epoch)
  return learning_rate.resolve(
      config, steps_per_epoch=steps_per_epoch,
      total_steps=in_steps(config.total_steps, config.total_epochs),
      eval_every=in_steps(config.eval_every_steps, config.eval_every_epochs))


def plan_of(config, devices: int = 1, processes: int = 1) -> run_plan.RunPlan:
  """``config``'s plan from the registry's facts, as the TPU planner resolves it."""
  from resnet_jax.data import registry  # pylint: disable=import-outside-toplevel
  return run_plan.resolve(config, devices=devices, processes=processes, facts=registry.get)


EVALUATED = re.compile(r'Evaluated step (\d+) of (\S+) on (\d+) devices?: (.+?) error ([\d.]+) %'
                       r'(?: \((\d+)/(\d+)\))?, top-5 ([\d.]+) %, loss (\S+)$')


def evaluated_lines(output: str) -> list[dict]:
  """The lines of ``main.py --mode=eval``, one dict per evaluated set: step, devices, set (its
  name as printed), error_top1 / error_top5 (percentages), wrong (a count, or None), loss."""
  lines = []
  for line in output.splitlines():
    found = EVALUATED.search(line)
    if found:
      step, _, devices, name, top1, wrong, _, top5, loss = found.groups()
      lines.append({'step': int(step), 'devices': int(devices), 'set': name,
                    'error_top1': float(top1), 'error_top5': float(top5),
                    'wrong': None if wrong is None else int(wrong), 'loss': float(loss)})
  return lines
