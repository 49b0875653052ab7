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


class StorageError(RuntimeError):
  """The workdir's storage refuses what the run writes (``storage_faults``): it is read-only or
  not permitted."""


class DiskFullError(StorageError):
  """The workdir's filesystem has no room left for what the run writes (``storage_faults``)."""


USER_ERRORS = (ConfigError, CheckpointError, DatasetNotAvailableError, DataError,
               DivergenceError, InitFromError, WorkdirInUseError, StorageError)


def listed(names: list[str], limit: int = 10) -> str:
  """``names`` for a message: the first ``limit`` of them, then how many more there are."""
  more = f' and {len(names) - limit} more' if len(names) > limit else ''
  return ', '.join(names[:limit]) + more


# How libraries word a refused write when they pass it on as text (tensorstore, TF), by fault.
FULL, READ_ONLY = 'full', 'read-only'
STORAGE_FAULT_TEXTS = {FULL: ('No space left on device', 'Disk quota exceeded'),
                       READ_ONLY: ('Read-only file system', 'Permission denied',
                                   'Operation not permitted')}
_STORAGE_FAULT_ERRNOS = {FULL: (errno.ENOSPC, errno.EDQUOT),
                         READ_ONLY: (errno.EROFS, errno.EACCES, errno.EPERM)}


def storage_fault(error: BaseException | None) -> str | None:
  """``FULL`` or ``READ_ONLY`` where ``error``, or an error it was raised from, says that the
  storage refused a write for want of space, or of permission; else None."""
  while error is not None:
    for fault, numbers in _STORAGE_FAULT_ERRNOS.items():
      if isinstance(error, OSError) and error.errno in numbers:
        return fault
    for fault, texts in STORAGE_FAULT_TEXTS.items():
      if any(text in str(error) for text in texts):
        return fault
    error = error.__cause__ or error.__context__
  return None


@contextlib.contextmanager
def exit_on_user_error():
  """Turns the errors above into their message on stderr and exit status 2, without traceback."""
  try:
    yield
  except USER_ERRORS as error:
    print(f'{type(error).__name__}: {error}', file=sys.stderr, flush=True)
    sys.exit(2)
