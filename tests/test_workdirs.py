"""Workdir paths: remote URIs stay remote, local paths become absolute; a remote workdir that
cannot be reached is one message, whoever reads it."""

import json
import os

import pytest
import tensorflow as tf
from etils import epath

from resnet_jax import checkpointing, errors, init_from, notebook, workdirs
from tests.harness import bucket_at, tiny_digits_config


def test_remote_workdirs_keep_their_scheme():
  assert checkpointing.checkpoint_dir('gs://bucket/r50') == 'gs://bucket/r50/checkpoints'
  assert os.fspath(workdirs.path('gs://bucket/r50') / 'config.json') == (
      'gs://bucket/r50/config.json')
  assert workdirs.is_remote('gs://bucket/r50') and not workdirs.is_remote('/tmp/r50')


def test_local_workdirs_become_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert checkpointing.checkpoint_dir('run') == os.path.join(str(tmp_path), 'run', 'checkpoints')
  assert not checkpointing.has_checkpoints('run')
  os.makedirs(tmp_path / 'run' / 'checkpoints')
  assert checkpointing.has_checkpoints('run')


# What TensorFlow's GCS client raises on a host without network (measured: its first gs:// call).
NO_NETWORK = ("Error executing an HTTP request: libcurl code 6 meaning 'Could not resolve "
              "hostname', error details: Could not resolve host: www.googleapis.com\n\t when "
              'reading metadata of gs://bucket/run/config.json')


@pytest.fixture
def no_network(monkeypatch):
  """Every gs:// call fails as it does without network, whether or not this host has one."""

  def unreachable(original_fn, *args, **kwargs):
    del original_fn, args, kwargs
    raise tf.errors.FailedPreconditionError(None, None, NO_NETWORK)

  monkeypatch.setattr(epath.gpath, '_is_tf_installed', lambda: False)  # Calls reach the double.
  names = ('open', 'exists', 'isdir', 'listdir', 'glob', 'makedirs', 'mkdir', 'stat')
  with epath.testing.mock_epath(**dict.fromkeys(names, unreachable)):
    yield


@pytest.mark.parametrize('reader', [
    lambda: workdirs.check_workdir(tiny_digits_config('/unused'), 'gs://bucket/run'),
    lambda: notebook.load_run('gs://bucket/run'),  # tools/evaluate.py, main.py --mode=eval
    lambda: init_from.read(tiny_digits_config('/unused', init_from='gs://bucket/run')),
], ids=['training', 'reading', 'init_from'])
def test_an_unreachable_remote_workdir_is_one_message_with_what_to_do(reader, no_network):
  with pytest.raises((errors.ConfigError, errors.InitFromError)) as refused:
    reader()
  assert ('gs://bucket/run cannot be reached (FailedPreconditionError: Error executing an HTTP '
          "request: libcurl code 6 meaning 'Could not resolve hostname', error details: Could "
          'not resolve host: www.googleapis.com). Check that this host reaches the storage') in (
              str(refused.value))
  assert 'gcloud auth application-default login' in str(refused.value)


def test_a_reachable_remote_workdir_passes_and_is_only_read(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # Plain os calls on 'gs://bucket/...' would write a local 'gs:'.
  (tmp_path / 'bucket').mkdir()
  with bucket_at(tmp_path / 'bucket', monkeypatch):
    workdirs.check_workdir(tiny_digits_config('/unused'), 'gs://bucket/run')
  assert os.listdir(tmp_path / 'bucket') == [] and not (tmp_path / 'gs:').exists()


def test_a_config_saved_before_a_field_existed_reads_that_fields_default(tmp_path):
  from resnet_jax import config_defaults, run_plan  # pylint: disable=import-outside-toplevel
  from resnet_jax.data import registry  # pylint: disable=import-outside-toplevel
  saved = json.loads(config_defaults.get_config().to_json_best_effort())
  saved['model']['name'] = 'resnet56'
  for section, field in (('mixup', None), ('ema', None), ('optimizer', 'linear_warmup_steps'),
                         ('dataset', 'eval_crop'), (None, 'loss')):
    if field is None:
      del saved[section]
    else:
      del (saved[section] if section else saved)[field]
  (tmp_path / workdirs.CONFIG_FILE).write_text(json.dumps(saved))
  config = workdirs.load_config(str(tmp_path))
  assert config.model.name == 'resnet56'  # The run's own value...
  assert (config.mixup.mixup_alpha, config.ema.decay, config.loss) == (0.0, 0.0, 'cross_entropy')
  assert config.dataset.eval_crop is None and config.optimizer.linear_warmup_steps == 0
  run_plan.resolve(config, devices=1, processes=1, facts=registry.get)  # ...and it plans.
