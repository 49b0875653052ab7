"""Workdir paths: remote URIs stay remote, local paths become absolute."""

import os

from resnet_jax import checkpointing, workdirs


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
