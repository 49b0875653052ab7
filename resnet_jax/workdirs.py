"""Workdir paths, local or remote (``gs://bucket/run``), through etils' ``epath``.

A local workdir is made absolute, so a run started from another directory finds the same files;
a remote one is kept as it is (``os.path.abspath`` would turn ``gs://b/r`` into a local folder).
"""

import os

from etils import epath

from resnet_jax.errors import ConfigError


def is_remote(workdir) -> bool:
  return '://' in os.fspath(workdir)


def path(workdir) -> epath.Path:
  """``workdir`` as an ``epath.Path``: absolute if local, unchanged if remote."""
  workdir = os.fspath(workdir)
  return epath.Path(workdir if is_remote(workdir) else os.path.abspath(workdir))


def check_reachable(location) -> None:
  """Raises ``ConfigError`` where the storage of a remote ``location`` (a workdir, a run to start
  from) does not answer: no network, no credentials. One message, where the storage client
  would end the command with its own traceback."""
  if not is_remote(location):
    return
  try:
    path(location).exists()
  except Exception as error:  # pylint: disable=broad-except  (TensorFlow's, fsspec's or gcsfs')
    reason = (str(error).strip().splitlines() or [''])[0]
    raise ConfigError(
        f'{location} cannot be reached ({type(error).__name__}: {reason}). Check that this host '
        'reaches the storage (its network, a proxy) and holds credentials for the bucket (gcloud '
        'auth application-default login; on a Cloud VM, its service account and scopes), or use '
        'a local directory.') from None
