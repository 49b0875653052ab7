"""A full or read-only disk: one message and exit status 2; with room (or writes) again, the run
goes on from its last complete checkpoint.

The disks are real: tmpfs mounts made by the tests (as root; skipped elsewhere). On 6 MiB, two
checkpoints of the digits ResNet-20 (269,434 parameters and their momentum, float32: 2.1 MiB)
fit, and a third does not: the issue's case, where the run used to die in orbax's tracebacks and
an ImportError at interpreter shutdown. A checkpoint directory remounted read-only used to cost
a compile and a run up to its first save, then about 5 minutes in orbax's time-outs and 12
tracebacks.
"""

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from configs import digits
from resnet_jax import checkpointing, workdirs
from resnet_jax.errors import DiskFullError
from resnet_jax.guards import storage_faults, workdir_lease
from tests.harness import logged_step, run_main, tiny_digits_flags

pytestmark = pytest.mark.e2e  # Every test starts processes.


def mounted_tmpfs(mount_point, size):
  """Mounts a tmpfs of ``size`` at ``mount_point``; skips the test where that is not allowed."""
  mount_point.mkdir()
  if os.geteuid() != 0:
    pytest.skip('Mounting a small tmpfs needs root; the full-disk tests run as root only.')
  mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs',
                            str(mount_point)], capture_output=True, text=True, check=False)
  if mounted.returncode:
    pytest.skip(f'Cannot mount a tmpfs here: {mounted.stderr.strip()}')
  return mount_point


@pytest.fixture
def small_disk(tmp_path):
  """A 6 MiB tmpfs, unmounted after the test."""
  yield mounted_tmpfs(tmp_path / 'disk', '6m')
  subprocess.run(['umount', str(tmp_path / 'disk')], check=True)


@pytest.fixture
def full_disk(tmp_path):
  """A 64 KiB tmpfs holding a workdir with a lease, then filled by another file."""
  disk = mounted_tmpfs(tmp_path / 'tiny', '64k')
  lease = workdir_lease.WorkdirLease(str(disk / 'run'))
  lease.acquire()
  with open(disk / 'filler', 'wb') as filler, contextlib.suppress(OSError):
    filler.write(b'x' * 2**20)
  yield disk / 'run', lease
  lease.release()
  subprocess.run(['umount', str(disk)], check=True)


def test_on_a_full_disk_events_and_config_stop_with_the_message_and_the_lease_still_renews(
    full_disk):
  workdir, lease = full_disk
  from clu import metric_writers  # pylint: disable=import-outside-toplevel  (TensorFlow)
  with pytest.raises(DiskFullError) as events, storage_faults.stops_the_run(str(workdir)):
    metric_writers.create_default_writer(str(workdir))  # Its first event is written at once.
  assert str(events.value).startswith(f'Out of disk space in {workdir}: a write failed (')
  assert 'events.out.tfevents' in str(events.value)
  assert '0.0 MiB free of 0.1 MiB. No checkpoint was complete yet' in str(events.value)
  with (pytest.raises(DiskFullError, match=re.escape(
      f'Out of disk space in {workdir}: a write failed ([Errno 28] No space left on device)')),
        storage_faults.stops_the_run(str(workdir))):
    workdirs.save_config(digits.get_config(), str(workdir))
  held = workdir / f'lease.held.{lease.token}.json'
  os.utime(held, (0, 0))
  lease.renew()  # Its modification time: no block to allocate.
  assert time.time() - os.stat(held).st_mtime < 60


def test_a_full_disk_stops_with_one_message_and_a_restart_with_room_goes_on(
    small_disk, data_dir):
  workdir = str(small_disk / 'run')
  checkpoints = checkpointing.checkpoint_dir(workdir)
  flags = tiny_digits_flags(data_dir, total_steps=4, checkpoint_every_steps=1,
                            eval_every_steps=100, keep_checkpoints=5)
  full = run_main(workdir, 'configs/digits.py', flags, check=False)
  out = full.stderr
  assert full.returncode == 2, out[-3000:]
  for noise in ('Traceback', 'Exception ignored', 'ImportError', 'Event loop is closed'):
    assert noise not in out, (noise, out[-3000:])
  (message,) = [line for line in out.splitlines() if line.startswith('DiskFullError')]
  assert message.startswith(
      f'DiskFullError: Out of disk space in {workdir}: the checkpoint of step 3 could not be '
      'written (3.orbax-checkpoint-tmp is left unfinished; the next start removes it). '), message
  assert 'The checkpoint of step 2 is complete and intact, and the run goes on from it' in message
  free, total, size = map(float, re.search(
      r'([\d.]+) MiB free of ([\d.]+) MiB. A checkpoint of this run takes ([\d.]+) MiB',
      message).groups())
  disk = shutil.disk_usage(small_disk)
  assert total == 6.0 and abs(free - disk.free / 2**20) <= 0.1, (message, disk)
  du = subprocess.run(['du', '-sb', os.path.join(checkpoints, '2')], capture_output=True,
                      text=True, check=True)
  assert size == round(int(du.stdout.split()[0]) / 2**20, 1)
  assert sorted(os.listdir(checkpoints)) == ['1', '2', '3.orbax-checkpoint-tmp']
  _, step = checkpointing.restore_variables(workdir, step=2)  # Intact: it restores.
  assert step == 2

  # Still full (counting the space the unfinished checkpoint frees): refused before compiling.
  with pytest.raises(DiskFullError, match='the next checkpoint would not fit'):
    storage_faults.check_room_for_a_checkpoint(workdir)

  subprocess.run(['mount', '-o', 'remount,size=10m', str(small_disk)], check=True)
  resumed = run_main(workdir, 'configs/digits.py', flags).stderr
  assert ('Removing the unfinished checkpoint '
          f'{os.path.join(checkpoints, "3.orbax-checkpoint-tmp")}') in resumed
  assert 'Resumed from the checkpoint at step 2.' in resumed
  assert sorted(os.listdir(checkpoints)) == ['1', '2', '3', '4']


@pytest.fixture
def checkpoints_disk(tmp_path):
  """A workdir whose checkpoints/ directory is a tmpfs of its own, unmounted after the test."""
  workdir = tmp_path / 'run'
  workdir.mkdir()
  disk = mounted_tmpfs(workdir / 'checkpoints', '16m')
  yield str(workdir), disk
  subprocess.run(['umount', str(disk)], check=True)


def remount_read_only(disk, process=None):
  """Remounts ``disk`` read-only, retrying while a write holds it (busy); SIGSTOPs ``process``
  around each try so that no save starts meanwhile."""
  for _ in range(200):
    if process is not None:
      process.send_signal(signal.SIGSTOP)
    result = subprocess.run(['mount', '-o', 'remount,ro', str(disk)], capture_output=True,
                            text=True, check=False)
    if process is not None:
      process.send_signal(signal.SIGCONT)
    if not result.returncode:
      return
    time.sleep(0.05)
  raise AssertionError(f'Could not remount {disk} read-only: {result.stderr}')


def read_only_message(result_code, out, workdir) -> tuple[str, int]:
  """The one StorageError line of a run's output, and the step it says the run goes on from."""
  assert result_code == 2, out[-3000:]
  for noise in ('Traceback', 'Exception ignored', 'TimeoutError', 'Event loop is closed'):
    assert noise not in out, (noise, out[-3000:])
  (message,) = [line for line in out.splitlines() if line.startswith('StorageError')]
  assert message.startswith(f'StorageError: The storage of {workdir} refuses writes: '), message
  return message, int(re.search(r'The checkpoint of step (\d+) is complete and intact',
                                message)[1])


def test_read_only_checkpoints_stop_a_run_before_it_compiles_or_writes(
    checkpoints_disk, data_dir):
  workdir, disk = checkpoints_disk
  flags = tiny_digits_flags(data_dir, total_steps=2, checkpoint_every_steps=2)
  run_main(workdir, 'configs/digits.py', flags)
  remount_read_only(disk)
  before = {name: os.stat(os.path.join(workdir, name)).st_mtime_ns
            for name in os.listdir(workdir)}
  resumed = run_main(workdir, 'configs/digits.py',
                     tiny_digits_flags(data_dir, total_steps=6, checkpoint_every_steps=2),
                     check=False)
  message, step = read_only_message(resumed.returncode, resumed.stderr, workdir)
  assert f'{workdir}/checkpoints cannot be written (Read-only file system)' in message
  assert step == 2
  assert 'Training resnet20' not in resumed.stderr  # Refused before the program was built.
  assert {name: os.stat(os.path.join(workdir, name)).st_mtime_ns
          for name in os.listdir(workdir)} == before


def test_checkpoints_turned_read_only_mid_run_stop_it_at_its_next_save(
    checkpoints_disk, data_dir):
  workdir, disk = checkpoints_disk
  flags = tiny_digits_flags(data_dir, total_steps=400, checkpoint_every_steps=4,
                            eval_every_steps=1000)
  process = run_main(workdir, 'configs/digits.py', flags, background=True)
  output = []
  for line in process.stdout:
    output.append(line)
    if (logged_step(line) or 0) >= 9:  # Checkpoints 4 and 8 are written.
      remount_read_only(disk, process)
      break
  output.append(process.communicate(timeout=120)[0])
  # The remount lands between two saves (the next one is refused before orbax starts it), or
  # during the save of step 8 (which stays unfinished): either way one message names the step.
  message, step = read_only_message(process.returncode, ''.join(output), workdir)
  left = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  if step == 8:
    assert f'{workdir}/checkpoints cannot be written (Read-only file system)' in message
    assert left == ['4', '8'], left
  else:
    assert 'the checkpoint of step 8 could not be written' in message, message
    assert left == ['4', '8.orbax-checkpoint-tmp'], left
