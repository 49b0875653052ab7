"""Fixtures shared by the tests that train; every test process runs JAX on the CPU.

Two tiers: the fast tier (``pytest -m "not e2e"``) runs in this process only; a test that
starts a process (main.py, tools, SLURM, pods), or compiles for minutes, is marked ``e2e``, and
one that is not marked and starts a process fails, naming the mark.
"""

import logging
import os
import subprocess
import tempfile
from unittest import mock

# With libtpu installed (requirements-tpu.txt, for tests/test_tpu_plan.py), JAX would try a TPU
# backend in every process and libtpu would ask for a metadata server: the tests use the CPU, and
# the plan test compiles for TPUs without either.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TPU_SKIP_MDS_QUERY', '1')
# One persistent compilation cache for every process a test session starts (the main.py runs of
# the end-to-end tier compile the same few programs again and again): XLA's executables, keyed
# by the program, the flags and the versions, so a hit computes exactly what a compile would.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(tempfile.gettempdir(), 'resnet_jax_test_compilations'))

import pytest  # pylint: disable=wrong-import-position
import tensorflow_datasets as tfds  # pylint: disable=wrong-import-position


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """The bundled digits dataset, prepared once so concurrent processes only read it."""
  from resnet_jax.data import digits  # noqa: F401  pylint: disable=import-outside-toplevel  (registers it)
  path = str(tmp_path_factory.mktemp('tfds'))
  tfds.builder('digits', data_dir=path).download_and_prepare()
  return path


# What libraries ask the system in passing (``platform.processor()`` runs ``uname -p``).
SYSTEM_QUERIES = ('uname', 'lscpu')


class _InProcessOnly(subprocess.Popen):
  """``subprocess.Popen`` for the fast tier: starts the system's queries, refuses the rest."""

  def __init__(self, args, *more_args, **kwargs):  # pylint: disable=super-init-not-called
    program = args if isinstance(args, str) else args[0]
    if os.path.basename(str(program).split()[0]) in SYSTEM_QUERIES:
      super().__init__(args, *more_args, **kwargs)
      return
    self._child_created = False  # What Popen.__del__ reads.
    raise AssertionError(
        f'This test starts a process ({args!r}); the fast tier runs in process only. Mark the '
        'test @pytest.mark.e2e, or test the rule in process.')


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):  # pylint: disable=unused-argument
  """Holds every test not marked ``e2e``, and the fixtures it sets up, to this process."""
  if item.get_closest_marker('e2e') is None:
    with mock.patch.object(subprocess, 'Popen', _InProcessOnly):
      yield
  else:
    yield


@pytest.fixture(autouse=True)
def absl_level_restored():
  """An in-process command's flags (absl's --verbosity) set the level of absl's logger; the
  next test starts from the level before."""
  level = logging.getLogger('absl').level
  yield
  logging.getLogger('absl').setLevel(level)
