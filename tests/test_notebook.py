"""The example notebooks: committed without outputs, and inspect_run.ipynb executed on a run."""

import glob
import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

from resnet_jax import events
from tests.harness import ROOT, run_main, tiny_digits_flags

NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, 'experiments', 'notebooks', '*.ipynb')))
INSPECT_RUN = os.path.join(ROOT, 'experiments', 'notebooks', 'inspect_run.ipynb')


def test_committed_notebooks_carry_no_outputs():
  assert INSPECT_RUN in NOTEBOOKS
  for path in NOTEBOOKS:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
      if cell.cell_type == 'code':
        assert (cell.outputs, cell.execution_count) == ([], None), (path, cell.source)


@pytest.fixture(scope='module')
def workdir(data_dir, tmp_path_factory):
  """A 5-step digits run trained on 2 devices, for a notebook on 1."""
  path = str(tmp_path_factory.mktemp('runs') / 'tiny')
  run_main(path, 'configs/digits.py', tiny_digits_flags(data_dir), devices=2)
  return path


@pytest.mark.e2e
def test_inspect_run_executes_on_a_run_and_reproduces_its_accuracy(workdir, monkeypatch):
  monkeypatch.setenv('RUN_DIR', workdir)
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=1')
  monkeypatch.setenv('MPLBACKEND', 'module://matplotlib_inline.backend_inline')
  notebook = nbformat.read(INSPECT_RUN, as_version=4)
  NotebookClient(notebook, timeout=300, kernel_name='python3',
                 resources={'metadata': {'path': ROOT}}).execute()

  outputs = [o for c in notebook.cells if c.cell_type == 'code' for o in c.outputs]
  text = ''.join(o.get('text', '') for o in outputs if o.output_type == 'stream')
  figures = [o for o in outputs if o.output_type == 'display_data' and 'image/png' in o.data]
  assert len(figures) == 3  # Curves, predictions, layer responses.
  assert 'resnet20 on digits at step 5; evaluating on 1 device(s)' in text
  steps, values = events.read_scalars(workdir)['eval_error_top1']
  recorded = float(values[steps == 5][0])
  evaluated = float(re.search(r'error_top1 evaluated now: (\S+)', text).group(1))
  # Trained on 2 devices, evaluated on 1: the logits may differ in the last bits, the top-1
  # error (a count) does not.
  assert evaluated == recorded
  assert f'error_top1 recorded in training: {recorded!r}' in text
