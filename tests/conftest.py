"""Fixtures shared by the tests that train."""

import pytest
import tensorflow_datasets as tfds


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """The bundled digits dataset, prepared once so concurrent processes only read it."""
  from resnet_jax import digits_dataset  # pylint: disable=import-outside-toplevel,unused-import
  path = str(tmp_path_factory.mktemp('tfds'))
  tfds.builder('digits', data_dir=path).download_and_prepare()
  return path
