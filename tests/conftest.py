"""Fixtures shared by the tests that train; every test process runs JAX on the CPU."""

import os

# With libtpu installed (requirements-tpu.txt, for tests/test_tpu_plan.py), JAX would try a TPU
# backend in every process and libtpu would ask for a metadata server: the tests use the CPU, and
# the plan test compiles for TPUs without either.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TPU_SKIP_MDS_QUERY', '1')

import pytest  # pylint: disable=wrong-import-position
import tensorflow_datasets as tfds  # pylint: disable=wrong-import-position


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """The bundled digits dataset, prepared once so concurrent processes only read it."""
  from resnet_jax.data import digits  # noqa: F401  pylint: disable=import-outside-toplevel  (registers it)
  path = str(tmp_path_factory.mktemp('tfds'))
  tfds.builder('digits', data_dir=path).download_and_prepare()
  return path
