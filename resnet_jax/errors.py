"""Errors that a user can fix, and how a command line reports them: one message, exit status 2."""

import contextlib
import sys

from resnet_jax.checkpointing import CheckpointError
from resnet_jax.config_lib import ConfigError


class DatasetNotAvailableError(ValueError):
  """The dataset is not prepared in the tfds data_dir; nothing is downloaded implicitly."""


class DivergenceError(FloatingPointError):
  """The training loss or the updated parameters became NaN or infinite."""


USER_ERRORS = (ConfigError, CheckpointError, DatasetNotAvailableError, DivergenceError)


@contextlib.contextmanager
def exit_on_user_error():
  """Turns the errors above into their message on stderr and exit status 2, without traceback."""
  try:
    yield
  except USER_ERRORS as error:
    print(f'{type(error).__name__}: {error}', file=sys.stderr, flush=True)
    sys.exit(2)
