"""Fixtures shared by the tests that train; every test process runs JAX on the CPU."""

import os
import tempfile

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
