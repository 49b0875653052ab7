"""One damaged file of the newest checkpoint: a run sets the step aside and resumes from the one
before; a reader (``load_run``, ``tools/evaluate.py``) reads the one before and names the damage.

Each case damages a single file of a real checkpoint that a 4-step digits run wrote (steps 2 and
4): the file that holds an item's array data (truncated, emptied, overwritten with random bytes),
or a metadata file (binary garbage, truncated JSON).
"""

import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from resnet_jax import checkpointing, train
from resnet_jax.errors import CheckpointError
from tests.harness import ROOT, plan_of, run_main, tiny_digits_config, tiny_digits_flags


@pytest.fixture(scope='module')
def finished(data_dir, tmp_path_factory):
  """A workdir with checkpoints at steps 2 and 4, and its config."""
  workdir = str(tmp_path_factory.mktemp('finished'))
  config = tiny_digits_config(data_dir, total_steps=4, checkpoint_every_steps=2,
                              eval_every_steps=4)
  train.train_and_evaluate(config, workdir)
  return workdir, config


def array_data_file(checkpoint: str, item: str) -> str:
  """The file that holds an item's arrays: the largest of its OCDBT data files."""
  directory = os.path.join(checkpoint, item, 'ocdbt.process_0', 'd')
  return max((os.path.join(directory, name) for name in os.listdir(directory)),
             key=os.path.getsize)


def damage(path: str, how: str) -> None:
  size = os.path.getsize(path)
  with open(path, 'r+b') as f:
    if how == 'truncated':
      f.truncate(size // 2)
    elif how == 'emptied':
      f.truncate(0)
    else:  # Random bytes, or binary garbage in a metadata file: the same size, other bytes.
      f.write(np.random.default_rng(0).bytes(max(size, 64)))


# name: (item, the damaged file of that item's directory, how).
CASES = {
    'model data truncated': ('model', None, 'truncated'),
    'model data emptied': ('model', None, 'emptied'),
    'model data random bytes': ('model', None, 'random'),
    'optimizer data random bytes': ('opt_state', None, 'random'),
    'model metadata binary': ('model', '_METADATA', 'random'),
    'model array metadata binary': ('model', 'array_metadatas/process_0', 'random'),
    'sharding metadata truncated': ('model', '_sharding', 'truncated'),
    'progress metadata binary': ('progress', 'metadata', 'random'),
}


@pytest.fixture(params=list(CASES))
def damaged(request, finished, tmp_path):
  """A copy of the finished run whose checkpoint of step 4 has one damaged file; the item."""
  source, config = finished
  workdir = str(tmp_path / 'run')
  shutil.copytree(source, workdir)
  item, name, how = CASES[request.param]
  latest = os.path.join(checkpointing.checkpoint_dir(workdir), '4')
  damage(os.path.join(latest, item, name) if name else array_data_file(latest, item), how)
  return workdir, config, item


def abstract_state(config):
  """The run's state as its loop restores it: shapes, dtypes and the replicated sharding."""
  program = train.build_program(plan_of(config))
  return jax.eval_shape(program.init, jax.random.key(0))


def test_a_run_sets_the_damaged_step_aside_and_resumes_from_the_one_before(damaged):
  workdir, config, _ = damaged
  manager = checkpointing.create_manager(workdir)
  try:
    state, progress = checkpointing.restore_latest(manager, abstract_state(config))
  finally:
    manager.close()
  assert progress['step'] == 2 and int(state.step) == 2
  assert os.listdir(os.path.join(workdir, 'unreadable_checkpoints')) == ['4']
  assert os.listdir(checkpointing.checkpoint_dir(workdir)) == ['2']


def test_a_reader_reads_the_step_before_names_the_damaged_one_and_moves_nothing(
    damaged, finished, caplog):
  # A reader restores the model's variables only: other items' damage does not concern it.
  workdir, _, item = damaged
  variables, step = checkpointing.restore_variables(workdir)
  expected = 2 if item == 'model' else 4
  intact, _ = checkpointing.restore_variables(finished[0], step=expected)
  assert step == expected
  for got, want in zip(jax.tree.leaves(variables), jax.tree.leaves(intact)):
    np.testing.assert_array_equal(got, want)
  assert sorted(os.listdir(checkpointing.checkpoint_dir(workdir))) == ['2', '4']
  if item == 'model':
    assert 'newer ones are damaged (step 4: ' in caplog.text
    with pytest.raises(CheckpointError, match='No readable checkpoint .* at step 4:\n  step 4: '):
      checkpointing.restore_variables(workdir, step=4)


@pytest.mark.e2e
def test_main_resumes_past_one_damaged_data_file_and_evaluate_reads_around_it(
    finished, data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(finished[0], workdir)
  latest = os.path.join(checkpointing.checkpoint_dir(workdir), '4')
  damage(array_data_file(latest, 'model'), 'random')
  evaluated = subprocess.run(
      [sys.executable, '-m', 'tools.evaluate', f'--workdir={workdir}', '--mode=center'],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert f'Evaluated {workdir} at step 2: center error' in evaluated.stdout, evaluated.stdout + evaluated.stderr[-3000:]
  assert 'newer ones are damaged (step 4: ValueError: ' in evaluated.stderr
  flags = tiny_digits_flags(data_dir, total_steps=6, checkpoint_every_steps=2,
                            eval_every_steps=6)
  result = run_main(workdir, 'configs/digits.py', flags)
  assert 'The checkpoint at step 4 cannot be restored' in result.stderr
  assert 'Resumed from the checkpoint at step 2' in result.stderr
  assert os.listdir(os.path.join(workdir, 'unreadable_checkpoints')) == ['4']
  assert checkpointing.restore_variables(workdir)[1] == 6
