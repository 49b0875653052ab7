"""Keeps a run's console readable: orbax's and tfds' INFO records (one per checkpoint save and
dataset read) are dropped from absl's log; their warnings and errors still show."""

import logging as std_logging

from absl import logging


class _LibraryInfoFilter(std_logging.Filter):
  """Drops the INFO records orbax and tfds log for every save and read; warnings still show."""

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or not any(
        library in record.pathname for library in ('/orbax/', '/tensorflow_datasets/'))


def quiet() -> None:
  """Installs the filter on absl's handler, once."""
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _LibraryInfoFilter) for f in handler.filters):
    handler.addFilter(_LibraryInfoFilter())
