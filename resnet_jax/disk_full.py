"""A full disk stops a run with one message, and the run goes on from its last complete checkpoint.

Orbax writes a checkpoint into ``<step>.orbax-checkpoint-tmp`` and renames it to ``<step>`` once
complete, so a save that runs out of space leaves every earlier checkpoint intact; the next start
removes the unfinished one (``checkpointing.create_manager``). The message says what could not
be written, how much space the filesystem has and a checkpoint takes, and which checkpoint the
run goes on from. Local filesystems only: an object store has no disk to fill.
"""

import contextlib
import gc
import os
import shutil

from resnet_jax import checkpointing, workdirs
from resnet_jax.errors import DiskFullError, is_out_of_space


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


def _message(workdir, problem: str, free: int) -> str:
  """``problem``, then the space, the checkpoint the run goes on from, and what to do."""
  complete, _ = _checkpoints(workdir)
  total = _space(workdir).total
  text = f'Out of disk space in {workdir}: {problem}. {_mib(free)} free of {_mib(total)}'
  if complete:
    newest = os.path.join(checkpointing.checkpoint_dir(workdir), str(complete[-1]))
    text += (f'; a checkpoint of this run takes {_mib(_tree_size(newest))}. The checkpoint of '
             f'step {complete[-1]} is complete and intact, and the run goes on from it')
  else:
    text += '. No checkpoint was complete yet: the run starts again from step 0'
  return (text + '. Make room for one more checkpoint (delete other files, or move the workdir '
          'to a larger disk; with --config.keep_checkpoints=N the disk needs room for N + 1), '
          'then run the same command again.')


def _what_failed(workdir, error: BaseException) -> str:
  _, unfinished = _checkpoints(workdir)
  if unfinished:
    names = ', '.join(os.path.basename(p) for p in unfinished)
    step = os.path.basename(unfinished[0]).split('.')[0]
    return (f'the checkpoint of step {step} could not be written ({names} is left unfinished; '
            'the next start removes it)')
  while error.__cause__ or error.__context__:  # The error the library met first.
    error = error.__cause__ or error.__context__
  if getattr(error, 'filename', None):
    return f'writing {error.filename} failed'
  return f'a write failed ({str(error).splitlines()[0][:300]})'


@contextlib.contextmanager
def stops_the_run(workdir):
  """Turns an out-of-space error inside into one ``DiskFullError`` (local workdirs)."""
  try:
    yield
  except DiskFullError:
    raise
  except Exception as error:
    if workdirs.is_remote(workdir) or not is_out_of_space(error):
      raise
    # Orbax's writes that were cut short are finalised now, while the interpreter can still run
    # their clean-up, rather than at its shutdown (where they fail with an ImportError).
    gc.collect()
    raise DiskFullError(_message(workdir, _what_failed(workdir, error),
                                 _space(workdir).free)) from None


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
    raise DiskFullError(_message(
        workdir, 'the next checkpoint would not fit, so the run stopped before compiling (the '
        'free space counts the unfinished checkpoint that a start removes)', free))
