"""Errors that a user can fix, and how a command line reports them: one message, exit status 2."""

import contextlib
import sys


class ConfigError(ValueError):
  """The config cannot give a correct run; the message says which field and what to do."""


class CheckpointError(RuntimeError):
  """No usable checkpoint where one was expected, or one that does not fit this run."""


class DatasetNotAvailableError(ValueError):
  """The dataset is not prepared in the tfds data_dir; nothing is downloaded implicitly."""


class DataError(ValueError):
  """The data cannot be read as asked; the message names the file or folder and what to do."""


class DivergenceError(FloatingPointError):
  """The training loss or the updated parameters became NaN or infinite."""


USER_ERRORS = (ConfigError, CheckpointError, DatasetNotAvailableError, DataError,
               DivergenceError)


@contextlib.contextmanager
def exit_on_user_error():
  """Turns the errors above into their message on stderr and exit status 2, without traceback."""
  try:
    yield
  except USER_ERRORS as error:
    print(f'{type(error).__name__}: {error}', file=sys.stderr, flush=True)
    sys.exit(2)
