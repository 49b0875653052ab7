"""A full disk: one message and exit status 2; with room again, the run goes on from its last
complete checkpoint.

The disk is real: a 3.5 MiB tmpfs that the test mounts (as root; skipped elsewhere), on which one
checkpoint of the digits ResNet-20 (269,434 parameters and their momentum, float32: 2.1 MiB)
fits, and a second does not.
"""

import contextlib
import os
import re
import shutil
import subprocess
import time

import pytest

from configs import digits
from resnet_jax import checkpointing, config_lib, disk_full, workdir_lease
from resnet_jax.errors import DiskFullError
from tests.harness import run_main, tiny_digits_flags


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
  """A 3.5 MiB tmpfs, unmounted after the test."""
  yield mounted_tmpfs(tmp_path / 'disk', '3584k')
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
  with pytest.raises(DiskFullError) as events, disk_full.stops_the_run(str(workdir)):
    metric_writers.create_default_writer(str(workdir))  # Its first event is written at once.
  assert str(events.value).startswith(f'Out of disk space in {workdir}: a write failed (')
  assert 'events.out.tfevents' in str(events.value)
  assert '0.0 MiB free of 0.1 MiB. No checkpoint was complete yet' in str(events.value)
  with (pytest.raises(DiskFullError, match=re.escape(
      f'Out of disk space in {workdir}: a write failed ([Errno 28] No space left on device)')),
        disk_full.stops_the_run(str(workdir))):
    config_lib.save_config(digits.get_config(), str(workdir))
  held = workdir / f'lease.held.{lease.token}.json'
  os.utime(held, (0, 0))
  lease.renew()  # Its modification time: no block to allocate.
  assert time.time() - os.stat(held).st_mtime < 60


def test_a_full_disk_stops_with_one_message_and_a_restart_with_room_goes_on(
    small_disk, data_dir):
  workdir = str(small_disk / 'run')
  checkpoints = checkpointing.checkpoint_dir(workdir)
  flags = tiny_digits_flags(data_dir, total_steps=3, checkpoint_every_steps=1,
                            eval_every_steps=100, keep_checkpoints=1)
  full = run_main(workdir, 'configs/digits.py', flags, check=False)
  out = full.stderr
  assert full.returncode == 2, out[-3000:]
  for noise in ('Traceback', 'Exception ignored', 'ImportError', 'Event loop is closed'):
    assert noise not in out, (noise, out[-3000:])
  (message,) = [line for line in out.splitlines() if line.startswith('DiskFullError')]
  assert message.startswith(
      f'DiskFullError: Out of disk space in {workdir}: the checkpoint of step 2 could not be '
      'written (2.orbax-checkpoint-tmp is left unfinished; the next start removes it). '), message
  assert 'The checkpoint of step 1 is complete and intact, and the run goes on from it' in message
  free, total, size = map(float, re.search(
      r'([\d.]+) MiB free of ([\d.]+) MiB; a checkpoint of this run takes ([\d.]+) MiB',
      message).groups())
  disk = shutil.disk_usage(small_disk)
  assert total == 3.5 and abs(free - disk.free / 2**20) <= 0.1, (message, disk)
  du = subprocess.run(['du', '-sb', os.path.join(checkpoints, '1')], capture_output=True,
                      text=True, check=True)
  assert size == round(int(du.stdout.split()[0]) / 2**20, 1)
  assert sorted(os.listdir(checkpoints)) == ['1', '2.orbax-checkpoint-tmp']
  _, step = checkpointing.restore_variables(workdir, step=1)  # Intact: it restores.
  assert step == 1

  # Still full (counting the space the unfinished checkpoint frees): refused before compiling.
  with pytest.raises(DiskFullError, match='the next checkpoint would not fit'):
    disk_full.check_room_for_a_checkpoint(workdir)

  subprocess.run(['mount', '-o', 'remount,size=8m', str(small_disk)], check=True)
  resumed = run_main(workdir, 'configs/digits.py', flags).stderr
  assert ('Removing the unfinished checkpoint '
          f'{os.path.join(checkpoints, "2.orbax-checkpoint-tmp")}') in resumed
  assert 'Resumed from the checkpoint at step 1.' in resumed
  assert os.listdir(checkpoints) == ['3']
