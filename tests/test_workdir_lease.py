"""One live run per workdir: refused while its holder lives, taken over once it is dead.

The holders are real: processes of this machine (alive, stopped or SIGKILLed), lease files that
a run on another host would have written, and main.py itself.
"""

import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

from resnet_jax.errors import WorkdirInUseError
from resnet_jax.guards import workdir_lease
from tests.harness import (
  ROOT,
  bucket_at,
  free_port,
  run_main,
  tiny_digits_flags,
  train_losses,
)

# When the other host's run started, and how its message must print it.
SINCE = datetime.datetime(2026, 12, 1, 9, 30, 5, tzinfo=datetime.UTC).timestamp()
NAMED = 'host node-b, process 4242, started 2026-12-01 09:30:05 UTC'


def other_hosts_claim(workdir, age_s=0.0, kind='held', **fields):
  """A lease file as a run on host node-b writes it, last renewed ``age_s`` ago."""
  renewed = time.time() - age_s
  holder = {'host': 'node-b', 'boot_id': 'another-boot', 'pid_namespace': 'pid:[1]',
            'pid': 4242, 'pid_start': '100', 'slurm_job': None, 'slurm_restart': 0,
            'processes': 1, 'since': SINCE, 'renewed_at': renewed, 'heartbeat_s': 15.0,
            'ttl_s': 60.0, 'took_over': [], **fields}
  path = os.path.join(workdir, f'lease.{kind}.{uuid.uuid4().hex}.json')
  with open(path, 'w') as f:
    json.dump(holder, f)
  os.utime(path, (renewed, renewed))
  return path


def lease_files(workdir):
  return sorted(n for n in os.listdir(workdir) if n.startswith('lease.'))


REQUEUED = {'SLURM_ARRAY_JOB_ID': '77', 'SLURM_ARRAY_TASK_ID': '3', 'SLURM_RESTART_COUNT': '1'}


@pytest.mark.parametrize('fields, env, took_over', [
    ({}, {}, None),  # Renewed just now on another host: a live run.
    ({'age_s': 61.0}, {}, r'its lease expired \d+ s ago'),
    ({'slurm_job': '77_3', 'slurm_restart': 0}, REQUEUED, r'SLURM requeued its job \(restart 1\)'),
    ({'slurm_job': '77_3', 'slurm_restart': 1}, REQUEUED, None),  # Another step of one attempt.
], ids=['live elsewhere', 'expired', 'requeued task', 'same attempt of the job'])
def test_another_hosts_lease_refuses_while_live_and_is_taken_when_dead(
    tmp_path, monkeypatch, caplog, fields, env, took_over):
  for name in ('SLURM_JOB_ID', 'SLURM_ARRAY_JOB_ID', 'SLURM_ARRAY_TASK_ID', 'SLURM_RESTART_COUNT'):
    monkeypatch.delenv(name, raising=False)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  theirs = other_hosts_claim(str(tmp_path), **fields)
  lease = workdir_lease.WorkdirLease(str(tmp_path))
  if took_over is None:
    with pytest.raises(WorkdirInUseError) as refused:
      lease.acquire()
    message = str(refused.value)
    assert f'The workdir {tmp_path} is in use by another run: {NAMED}' in message, message
    assert ('SLURM job 77_3' in message) == bool(fields.get('slurm_job')), message
    assert lease_files(str(tmp_path)) == [os.path.basename(theirs)]  # Nothing of ours is left.
    return
  lease.acquire()
  try:
    assert lease_files(str(tmp_path)) == [f'lease.held.{lease.token}.json']
    line = f'Took over the workdir {tmp_path} from {NAMED}'
    assert any(line in m for m in caplog.messages), caplog.messages
    assert any(re.search(took_over, m) for m in caplog.messages), caplog.messages
  finally:
    lease.release()
  assert lease_files(str(tmp_path)) == []


def test_a_gs_workdir_is_refused_taken_and_renewed_as_a_local_one(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # Plain os calls on 'gs://bucket/...' would write a local 'gs:'.
  local = tmp_path / 'bucket' / 'run'
  local.mkdir(parents=True)
  with bucket_at(tmp_path / 'bucket', monkeypatch):
    live = other_hosts_claim(str(local))
    with pytest.raises(WorkdirInUseError, match=f'gs://bucket/run is in use by another run: {NAMED}'):
      workdir_lease.WorkdirLease('gs://bucket/run').acquire()
    os.remove(live)
    other_hosts_claim(str(local), age_s=61.0)
    lease = workdir_lease.WorkdirLease('gs://bucket/run')
    lease.acquire()
    (held,) = lease_files(str(local))
    assert held == f'lease.held.{lease.token}.json'
    before = json.loads((local / held).read_text())['renewed_at']
    lease.renew()  # In a bucket the renewal rewrites the object (no modification time to set).
    assert json.loads((local / held).read_text())['renewed_at'] > before
    lease.release()
  assert lease_files(str(local)) == []


def test_a_stale_lease_elsewhere_is_waited_for_until_it_expires(tmp_path, caplog):
  # Renewed 1.5 s ago by a run that renews every 0.5 s and expires after 2.5 s: it missed two
  # renewals, so the new run waits for its expiry (about 1 s) rather than refuse.
  other_hosts_claim(str(tmp_path), age_s=1.5, heartbeat_s=0.5, ttl_s=2.5)
  lease = workdir_lease.WorkdirLease(str(tmp_path))
  lease.acquire()
  lease.release()
  assert any('which has not renewed its lease for' in m
             for m in caplog.messages), caplog.messages
  assert any('its lease expired' in m for m in caplog.messages), caplog.messages


HOLDER = '''
import sys, time
from resnet_jax.guards import workdir_lease
go = sys.argv[2] if len(sys.argv) > 2 else None
print('READY', flush=True)
while go and not __import__('os').path.exists(go):
  time.sleep(0.01)
lease = workdir_lease.WorkdirLease(sys.argv[1])
try:
  lease.acquire()
except workdir_lease.WorkdirInUseError as error:
  print('REFUSED', error, flush=True)
  sys.exit(0)
print('HELD', flush=True)
sys.stdin.read()  # Holds the lease until the test closes stdin (or kills it).
lease.release()
'''


def holder_process(*args):
  return subprocess.Popen([sys.executable, '-c', HOLDER, *args], cwd=ROOT, text=True,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE)


@pytest.mark.e2e
def test_a_process_of_this_host_keeps_the_workdir_while_it_exists_and_loses_it_when_killed(
    tmp_path, caplog):
  holder = holder_process(str(tmp_path))
  assert holder.stdout.readline() == 'READY\n' and holder.stdout.readline() == 'HELD\n'
  holder.send_signal(signal.SIGSTOP)  # Stopped, it renews nothing ...
  (held,) = lease_files(str(tmp_path))
  an_hour_ago = time.time() - 3600
  os.utime(tmp_path / held, (an_hour_ago, an_hour_ago))  # ... and its lease looks long expired.
  with pytest.raises(WorkdirInUseError,
                     match=f'host {socket.gethostname()}, process {holder.pid}, started '):
    workdir_lease.WorkdirLease(str(tmp_path)).acquire()
  holder.kill()
  holder.wait()
  lease = workdir_lease.WorkdirLease(str(tmp_path))
  lease.acquire()  # At once: its process is gone.
  lease.release()
  assert any(f'process {holder.pid}' in m and 'its process is gone' in m
             for m in caplog.messages), caplog.messages


@pytest.mark.e2e
def test_of_two_runs_started_together_exactly_one_holds_the_workdir(tmp_path):
  go = str(tmp_path / 'go')
  workdir = str(tmp_path / 'run')
  runs = [holder_process(workdir, go) for _ in range(2)]
  for run in runs:
    assert run.stdout.readline() == 'READY\n'
  open(go, 'w').close()
  verdicts = {}
  for run in runs:
    verdicts[run] = run.stdout.readline()
  held = [run for run, verdict in verdicts.items() if verdict == 'HELD\n']
  assert len(held) == 1, verdicts.values()
  for run, verdict in verdicts.items():
    if run is not held[0]:
      assert verdict.startswith('REFUSED The workdir'), verdict
      assert run.wait(timeout=60) == 0
  (only,) = lease_files(workdir)
  assert only.startswith('lease.held.')
  held[0].communicate('')  # Closing stdin releases it.
  assert held[0].returncode == 0 and lease_files(workdir) == []


def test_a_run_whose_lease_was_taken_over_stops_before_its_next_checkpoint(tmp_path):
  lease = workdir_lease.WorkdirLease(str(tmp_path), heartbeat_s=0.05)
  lease.acquire()
  # What a run on node-b does when it takes over a lease it judged expired.
  theirs = other_hosts_claim(str(tmp_path), took_over=[lease.token])
  os.remove(tmp_path / f'lease.held.{lease.token}.json')
  for _ in range(600):
    if lease.lost:
      break
    time.sleep(0.05)
  with pytest.raises(WorkdirInUseError, match='This run lost its workdir: .*removed.* stopped '
                     'before writing the checkpoint of step 7'):
    workdir_lease.AgreedLease(lease).check(7)
  lease.release()
  assert lease_files(str(tmp_path)) == [os.path.basename(theirs)]


AGREE = '''
import os, sys
from jax.experimental import multihost_utils
from resnet_jax.parallel import distributed
distributed.initialize(f'127.0.0.1:{sys.argv[1]}', 2, int(sys.argv[2]))
from resnet_jax import errors
from resnet_jax.guards import workdir_lease
for workdir in sys.argv[3:]:
  try:
    with workdir_lease.hold(workdir) as lease:
      lease.check(1)
      print('RESULT held', sorted(os.listdir(workdir)), flush=True)
      multihost_utils.sync_global_devices('both listed')
  except errors.WorkdirInUseError as error:
    print('RESULT refused', error, flush=True)
'''


@pytest.mark.e2e
def test_every_process_of_a_run_shares_its_workdir_and_all_are_refused_together(tmp_path):
  busy, free = tmp_path / 'busy', tmp_path / 'free'
  busy.mkdir()
  other_hosts_claim(str(busy))
  port = free_port()
  env = {k: v for k, v in os.environ.items() if not k.startswith('SLURM_')}
  processes = [subprocess.Popen([sys.executable, '-c', AGREE, str(port), str(i), str(busy),
                                 str(free)], cwd=ROOT, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
               for i in range(2)]
  outputs = [p.communicate(timeout=120)[0] for p in processes]
  results = [[line for line in out.splitlines() if line.startswith('RESULT')] for out in outputs]
  assert [p.returncode for p in processes] == [0, 0], outputs
  refusals = {r[0] for r in results}
  assert len(refusals) == 1 and NAMED in refusals.pop(), results  # The same message on both.
  # Process 0's lease file, seen by both; process 1 took none of its own.
  assert results[0][1] == results[1][1] and results[0][1].count('lease.held.') == 1, results
  assert lease_files(str(free)) == []


@pytest.mark.e2e
def test_a_second_main_py_on_a_live_workdir_is_refused_and_the_first_finishes(
    data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  flags = tiny_digits_flags(data_dir, total_steps=3)  # One evaluation, one checkpoint.
  first = run_main(workdir, 'configs/digits.py', flags, background=True)
  output = []
  for line in first.stdout:
    output.append(line)
    if 'This run holds the workdir' in line:
      break
  first.send_signal(signal.SIGSTOP)  # Alive, but it cannot finish before the second one starts.
  try:
    second = run_main(workdir, 'configs/digits.py', flags, check=False)
  finally:
    first.send_signal(signal.SIGCONT)
  output.append(first.communicate(timeout=300)[0])
  assert second.returncode == 2, second.stderr[-3000:]
  assert (f'WorkdirInUseError: The workdir {workdir} is in use by another run: host '
          f'{socket.gethostname()}, process {first.pid}, started ') in second.stderr
  assert 'Traceback' not in second.stderr and 'Training resnet20' not in second.stderr
  assert first.returncode == 0, ''.join(output)[-3000:]
  assert sorted(train_losses(workdir)) == [1, 2, 3]  # Logged once each: by the first.
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == ['3']
  assert lease_files(workdir) == []
