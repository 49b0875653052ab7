"""Errors that a user can fix, and how a command line reports them: one message, exit status 2."""

import contextlib
import errno
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


class InitFromError(ValueError):
  """``init_from`` names weights that cannot start this run: missing, unreadable, or of another
  network; the message names each variable that does not fit."""


class WorkdirInUseError(RuntimeError):
  """Another live run holds the workdir (``workdir_lease``), or this run lost it to another."""


class DiskFullError(RuntimeError):
  """The workdir's filesystem has no room left for what the run writes (``disk_full``)."""


USER_ERRORS = (ConfigError, CheckpointError, DatasetNotAvailableError, DataError,
               DivergenceError, InitFromError, WorkdirInUseError, DiskFullError)

# How libraries word an out-of-space failure when they pass it on as text (tensorstore, TF).
OUT_OF_SPACE_TEXTS = ('No space left on device', 'Disk quota exceeded')


def is_out_of_space(error: BaseException | None) -> bool:
  """Whether ``error``, or an error it was raised from, says the disk or the quota is full."""
  while error is not None:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    if any(text in str(error) for text in OUT_OF_SPACE_TEXTS):
      return True
    error = error.__cause__ or error.__context__
  return False


@contextlib.contextmanager
def exit_on_user_error():
  """Turns the errors above into their message on stderr and exit status 2, without traceback."""
  try:
    yield
  except USER_ERRORS as error:
    print(f'{type(error).__name__}: {error}', file=sys.stderr, flush=True)
    sys.exit(2)
