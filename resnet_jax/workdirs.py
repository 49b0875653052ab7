"""Workdir paths, local or remote (``gs://bucket/run``), through etils' ``epath``.

A local workdir is made absolute, so a run started from another directory finds the same files;
a remote one is kept as it is (``os.path.abspath`` would turn ``gs://b/r`` into a local folder).
"""

import os

from etils import epath


def is_remote(workdir) -> bool:
  return '://' in os.fspath(workdir)


def path(workdir) -> epath.Path:
  """``workdir`` as an ``epath.Path``: absolute if local, unchanged if remote."""
  workdir = os.fspath(workdir)
  return epath.Path(workdir if is_remote(workdir) else os.path.abspath(workdir))
