"""Keeps a run's console readable: orbax's, tfds' and tensorboard's INFO records (one per
checkpoint save, dataset read and event file read back) and orbax's notices about the project's
read-only readers are dropped from absl's log, their other warnings and errors still show; a full
or read-only disk is reported once, by the run (``storage_faults``), not in every library thread
that met it; and libtpu is not started where there is no TPU."""

import glob
import importlib
import logging as std_logging
import os
import sys
import tempfile

import jax
from absl import logging

from resnet_jax.errors import STORAGE_FAULT_TEXTS, storage_fault

# Device files of the accelerators JAX uses: TPUs (accel; vfio groups on v5p and later),
# NVIDIA GPUs (dxg under WSL) and AMD GPUs.
ACCELERATOR_DEVICES = ('/dev/accel*', '/dev/vfio/[0-9]*', '/dev/nvidia[0-9]*', '/dev/nvidiactl',
                       '/dev/dxg', '/dev/kfd')


# Where a failed write is logged again apart from the run's own report: orbax's save threads,
# clu's asynchronous metric writer, and asyncio ('Task exception was never retrieved', for the
# writes orbax abandoned once one failed).
_WRITERS = ('/orbax/', '/clu/', '/asyncio/')


# What orbax warns of each reader the project opens read-only on purpose (to read a workdir
# without writing to it).
_READ_ONLY_NOTICES = ('CheckpointManagerOptions.read_only=True', 'Given directory is read only')
# What tfds warns of the project's own builder configs (a prepared image folder's stored form).
_TFDS_BUILDER_NOTICE = 'Using custom data configuration'


class _LibraryInfoFilter(std_logging.Filter):
  """Drops the INFO records orbax and tfds log for every save and read, and the records of
  orbax's, clu's and asyncio's about a full or read-only disk; other warnings and errors still
  show."""

  def filter(self, record):
    if any(library in record.pathname for library in _WRITERS) and (
        storage_fault(record.exc_info[1] if record.exc_info else None)
        or any(text in record.getMessage()
               for texts in STORAGE_FAULT_TEXTS.values() for text in texts)):
      return False
    if '/orbax/' in record.pathname and record.getMessage().startswith(_READ_ONLY_NOTICES):
      return False
    if ('/tensorflow_datasets/' in record.pathname
        and record.getMessage().startswith(_TFDS_BUILDER_NOTICE)):
      return False
    return record.levelno >= std_logging.WARNING or not any(
        library in record.pathname for library in ('/orbax/', '/tensorflow_datasets/',
                                                   '/tensorboard/'))


def _drop_closed_loop_callbacks(unraisable):
  """Ignores 'Event loop is closed' from tensorstore's callbacks (Python's own hook reports the
  rest): once one of orbax's writes fails (a full disk), orbax closes its event loop and the
  writes still in flight call back into it; the failure itself reaches the run."""
  if not (isinstance(unraisable.exc_value, RuntimeError)
          and str(unraisable.exc_value) == 'Event loop is closed'):
    sys.__unraisablehook__(unraisable)


def quiet() -> None:
  """Installs the filter on absl's handler, and the hook of unraisable errors, once; nothing
  where the command line asked for every record (``configure(verbose=True)``)."""
  if _verbose:
    return
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _LibraryInfoFilter) for f in handler.filters):
    handler.addFilter(_LibraryInfoFilter())
  if sys.unraisablehook is not _drop_closed_loop_callbacks:
    sys.unraisablehook = _drop_closed_loop_callbacks


def use_cpu_without_accelerators() -> None:
  """Has JAX start only its CPU backend on a machine with no accelerator device file, unless a
  platform was chosen; call it before JAX first uses a device.

  JAX ends up on the CPU there anyway, but first tries every backend it has: with libtpu
  installed (requirements-tpu.txt, e.g. to plan TPU runs) that starts libtpu, which finds no
  TPU and logs INVALID_ARGUMENT errors about TPU_WORKER_HOSTNAMES and the metadata server. A
  chosen platform (JAX_PLATFORMS, or ``jax_platforms``, which JAX sets itself on a TPU VM) and
  any machine with a TPU or GPU device file keep JAX's own choice.
  """
  if ('JAX_PLATFORMS' in os.environ or jax.config.jax_platforms
      or any(glob.glob(pattern) for pattern in ACCELERATOR_DEVICES)):
    return
  jax.config.update('jax_platforms', 'cpu')


# What TensorFlow's native libraries print to stderr when they load, before any Python logging
# can filter it: absl's notice about its own start, oneDNN's and the CPU features' notices.
_NATIVE_NOTICES = ('All log messages before absl::InitializeLog()', 'oneDNN custom operations',
                   'cpu_feature_guard', 'To enable the following instructions')
_verbose = False


def define_verbose_flag() -> None:
  """The ``--verbose`` flag of the project's commands."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_bool('verbose', False, "Show the libraries' own records (TensorFlow, orbax, "
                    'tfds, tensorboard, absl INFO) besides the command\'s lines.')


def configure(verbose: bool) -> None:
  """A command's console: with ``verbose``, every library's records; else ``quiet``, and
  TensorFlow imported here with its start-up notices dropped (other native output passes)."""
  global _verbose
  _verbose = verbose
  if verbose:
    return
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')  # TensorFlow's later native INFO lines.
  quiet()
  if 'tensorflow' in sys.modules:
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      importlib.import_module('tensorflow')
    finally:
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      kept = [line for line in captured.read().decode(errors='replace').splitlines(True)
              if not any(notice in line for notice in _NATIVE_NOTICES)]
      os.write(2, ''.join(kept).encode())
