"""A full or read-only disk stops a run with one message; the run goes on from its last complete
checkpoint once the disk takes writes again.

Orbax writes a checkpoint into ``<step>.orbax-checkpoint-tmp`` and renames it to ``<step>`` once
complete, so a save that runs out of space leaves every earlier checkpoint intact; the next start
removes the unfinished one (``checkpointing.create_manager``). A checkpoint directory that cannot
be written (a read-only mount, missing permissions) is found before anything is compiled, and
again before every save: orbax would meet it in a background thread and wait minutes for a
signal that never comes. The message says what could not be written, how much space the
filesystem has and a checkpoint takes, and which checkpoint the run goes on from. Local
filesystems only: an object store has no disk to fill or remount.
"""

import contextlib
import errno
import os
import shutil

from resnet_jax import checkpointing, workdirs
from resnet_jax.errors import FULL, DiskFullError, StorageError, storage_fault


def _mib(size: int) -> str:
  return f'{size / 2**20:.1f} MiB'


def _tree_size(path: str) -> int:
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(path) for name in names)


def _checkpoints(workdir) -> tuple[list[int], list[str]]:
  """The complete steps in ``workdir`` (ascending) and the unfinished checkpoints' paths."""
  directory = checkpointing.checkpoint_dir(workdir)
  names = os.listdir(directory) if os.path.isdir(directory) else []
  return (sorted(int(n) for n in names if n.isdigit()),
          sorted(os.path.join(directory, n) for n in names
                 if checkpointing.UNFINISHED_SUFFIX in n))


def _space(workdir):
  """``shutil.disk_usage`` (total, used, free) of the filesystem that holds ``workdir``."""
  existing = os.fspath(workdirs.path(workdir))
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  return shutil.disk_usage(existing)


def _goes_on_from(workdir) -> str:
  """Which checkpoint the run goes on from, and what it takes on disk."""
  complete, _ = _checkpoints(workdir)
  if not complete:
    return 'No checkpoint was complete yet: the run starts again from step 0'
  newest = os.path.join(checkpointing.checkpoint_dir(workdir), str(complete[-1]))
  return (f'A checkpoint of this run takes {_mib(_tree_size(newest))}. The checkpoint of step '
          f'{complete[-1]} is complete and intact, and the run goes on from it')


def _full_message(workdir, problem: str, free: int) -> str:
  """``problem``, then the space, the checkpoint the run goes on from, and what to do."""
  return (f'Out of disk space in {workdir}: {problem}. {_mib(free)} free of '
          f'{_mib(_space(workdir).total)}. {_goes_on_from(workdir)}. Make room for one more '
          'checkpoint (delete other files, or move the workdir to a larger disk; with '
          '--config.keep_checkpoints=N the disk needs room for N + 1), then run the same command '
          'again.')


def _read_only_message(workdir, problem: str) -> str:
  return (f'The storage of {workdir} refuses writes: {problem}. {_goes_on_from(workdir)}. Make '
          'it writable (remount it read-write, or give this user write permission), or copy the '
          'workdir to writable storage and pass the copy as --workdir; then run the same command '
          'again.')


def _failed_write(error: BaseException) -> BaseException:
  """The error the library met, innermost first, among ``error`` and those it was raised from."""
  chain = [error]
  while chain[-1].__cause__ or chain[-1].__context__:
    chain.append(chain[-1].__cause__ or chain[-1].__context__)
  return next(e for e in reversed(chain) if storage_fault(e))


def _what_failed(workdir, error: BaseException) -> str:
  _, unfinished = _checkpoints(workdir)
  if unfinished:
    names = ', '.join(os.path.basename(p) for p in unfinished)
    step = os.path.basename(unfinished[0]).split('.')[0]
    return (f'the checkpoint of step {step} could not be written ({names} is left unfinished; '
            'the next start removes it)')
  error = _failed_write(error)
  if getattr(error, 'filename', None):
    return f'writing {error.filename} failed ({error.strerror})'
  return f'a write failed ({str(error).splitlines()[0][:300]})'


@contextlib.contextmanager
def stops_the_run(workdir):
  """Turns a full or read-only disk met inside into one ``StorageError`` (local workdirs)."""
  try:
    yield
  except StorageError:
    raise
  except Exception as error:
    fault = storage_fault(error)
    if workdirs.is_remote(workdir) or fault is None:
      raise
    if fault == FULL:
      raise DiskFullError(_full_message(workdir, _what_failed(workdir, error),
                                        _space(workdir).free)) from None
    raise StorageError(_read_only_message(workdir, _what_failed(workdir, error))) from None


def check_checkpoints_writable(workdir) -> None:
  """Raises ``StorageError`` where the checkpoint directory (or the workdir that will hold it)
  takes no writes: a read-only filesystem, or no write permission for this user."""
  if workdirs.is_remote(workdir):
    return
  directory = checkpointing.checkpoint_dir(workdir)
  while not os.path.exists(directory):
    directory = os.path.dirname(directory)
  if os.access(directory, os.W_OK | os.X_OK):
    return
  read_only = os.statvfs(directory).f_flag & os.ST_RDONLY
  reason = os.strerror(errno.EROFS if read_only else errno.EACCES)
  raise StorageError(_read_only_message(
      workdir, f'{directory} cannot be written ({reason}), so no checkpoint could be saved'))


def check_room_for_a_checkpoint(workdir) -> None:
  """Refuses to resume, before anything is compiled, where the next checkpoint cannot fit: less
  free space (counting the unfinished checkpoints the start removes) than the newest takes."""
  if workdirs.is_remote(workdir):
    return
  complete, unfinished = _checkpoints(workdir)
  if not complete:
    return
  need = _tree_size(os.path.join(checkpointing.checkpoint_dir(workdir), str(complete[-1])))
  free = _space(workdir).free + sum(_tree_size(p) for p in unfinished)
  if free < need:
    raise DiskFullError(_full_message(
        workdir, 'the next checkpoint would not fit, so the run stopped before compiling (the '
        'free space counts the unfinished checkpoint that a start removes)', free))
