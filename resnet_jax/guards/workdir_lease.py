"""One live run per workdir: a lease that the run renews while it lives and loses when it dies.

The lease is a file in the workdir, written through ``epath``, so a ``gs://`` workdir (no file
locks there) works as a local one does: ``lease.candidate.<token>.json`` for a run that is trying
to take the workdir, ``lease.held.<token>.json`` (the same file, renamed) for the run that holds
it. Each names its process (host, process id, start time, the SLURM job where there is one), and
a background thread renews it every ``HEARTBEAT_S``. A run writes its candidate file, lists the
lease files, and takes the workdir if every other one is dead; otherwise it withdraws. A claim is
dead when its process is gone (on the same machine this is seen at once, and a process still
there, even stopped, keeps the workdir), when it is an earlier attempt of the same SLURM job (a
requeued task), when this process wrote it, or, from another machine, ``TTL_S`` after its last
renewal; one that missed two renewals is waited for until it is renewed or expires.

Guarantees, on storage where a finished write shows in every listing that starts after it (local
filesystems, Google Cloud Storage): two runs that start together never both hold the workdir,
since each lists only after writing its own file, so one at least sees the other (both may back
off; one wins a retry). A live holder keeps the workdir while it renews within ``TTL_S`` and
clocks agree to within seconds. A holder that could not renew for that long (a paused VM, lost
storage) may be taken over; it finds out at its next renewal and stops at its next checkpoint
without writing it.

In a multi-host run only process 0 takes the lease; every process gets its verdict (one
broadcast), so all start, or all stop with the same message.
"""

import contextlib
import dataclasses
import datetime
import json
import os
import random
import socket
import threading
import time
import uuid

import jax
import numpy as np
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from resnet_jax import workdirs
from resnet_jax.errors import WorkdirInUseError

HEARTBEAT_S = 15.0  # How often a holder renews its lease.
TTL_S = 60.0        # How long after its last renewal a lease expires.
# Back-offs of a run that met another candidate (then both withdraw), before it gives up.
CONTENTION_RETRIES, CONTENTION_BACKOFF_S = 20, (0.2, 1.0)
# How often a run that waits for a stale lease to expire reads it again.
STALE_POLL_S = 1.0
_PREFIX = 'lease.'


# --------------------------------------------------------------------------------------------
# Who a claim's process is, and whether it is dead.
# --------------------------------------------------------------------------------------------


def _read_proc(path: str) -> str | None:
  try:
    with open(path) as f:
      return f.read().strip()
  except OSError:
    return None


def _proc_state_and_start(pid: int) -> tuple[str, str] | None:
  """A Linux process's state letter and start time (clock ticks after boot); None if gone."""
  stat = _read_proc(f'/proc/{pid}/stat')
  if stat is None:
    return None
  fields = stat[stat.rindex(')') + 2:].split()  # After '(command name)', which may hold spaces.
  return fields[0], fields[19]


def _pid_namespace() -> str | None:
  try:
    return os.readlink('/proc/self/ns/pid')
  except OSError:
    return None


def slurm_job() -> tuple[str | None, int]:
  """This process's SLURM job ('JOB' or 'ARRAYJOB_TASK') and its restart count (requeues)."""
  array, task = os.environ.get('SLURM_ARRAY_JOB_ID'), os.environ.get('SLURM_ARRAY_TASK_ID')
  job = f'{array}_{task}' if array and task else os.environ.get('SLURM_JOB_ID')
  return job, int(os.environ.get('SLURM_RESTART_COUNT') or 0)


def this_process(heartbeat_s: float, ttl_s: float) -> dict:
  """What a claim says about the process that writes it."""
  pid = os.getpid()
  proc = _proc_state_and_start(pid)
  job, restarts = slurm_job()
  now = time.time()
  return {'host': socket.gethostname(), 'boot_id': _read_proc('/proc/sys/kernel/random/boot_id'),
          'pid_namespace': _pid_namespace(), 'pid': pid, 'pid_start': proc and proc[1],
          'slurm_job': job, 'slurm_restart': restarts, 'processes': jax.process_count(),
          'since': now, 'renewed_at': now, 'heartbeat_s': heartbeat_s, 'ttl_s': ttl_s,
          'took_over': []}


def _same_machine(holder: dict, me: dict) -> bool:
  """Same host, same kernel boot, same process-id namespace: its pid means what ours would."""
  return all(holder.get(k) == me[k] for k in ('host', 'boot_id', 'pid_namespace'))


def _process_gone(holder: dict) -> bool:
  """Whether the claim's process (on this machine) has exited, or its pid is now another's."""
  pid = int(holder['pid'])
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return True
  except PermissionError:  # Another user's process: it exists.
    pass
  proc = _proc_state_and_start(pid)  # Linux: a zombie, or a later process that got the pid.
  return proc is not None and (proc[0] in 'ZX' or holder.get('pid_start') not in (None, proc[1]))


@dataclasses.dataclass(frozen=True)
class Claim:
  """One lease file: whose it is, whether it is held, and its age since its last renewal."""
  path: epath.Path
  token: str
  held: bool
  holder: dict
  age_s: float

  def describe(self) -> str:
    """E.g. 'host node7, process 4242, started 2026-12-01 10:00:03 UTC, SLURM job 77_3'."""
    h = self.holder
    since = datetime.datetime.fromtimestamp(h.get('since', 0), datetime.UTC)
    text = (f'host {h.get("host", "?")}, process {h.get("pid", "?")}, started '
            f'{since:%Y-%m-%d %H:%M:%S} UTC')
    if h.get('slurm_job'):
      text += f', SLURM job {h["slurm_job"]}'
    if h.get('processes', 1) > 1:
      text += f', a run of {h["processes"]} processes'
    return text

  def ttl_s(self) -> float:
    return float(self.holder.get('ttl_s', TTL_S))

  def verdict(self, me: dict) -> tuple[str, str | None]:
    """('dead', why): its lease may be taken now; 'stale': it missed two renewals, and may
    still renew; 'live'. On this machine its process's existence decides, however old its
    lease (a stopped or busy process still holds it); elsewhere, its lease's age."""
    h = self.holder
    if h.get('slurm_job') and h['slurm_job'] == me['slurm_job'] and (
        h.get('slurm_restart', 0) < me['slurm_restart']):
      return 'dead', f'SLURM requeued its job (restart {me["slurm_restart"]})'
    if 'pid' in h and _same_machine(h, me):
      if h['pid'] == me['pid'] and h.get('pid_start') == me['pid_start']:
        return 'dead', 'it is an earlier run in this process'
      return ('dead', 'its process is gone') if _process_gone(h) else ('live', None)
    if self.age_s > self.ttl_s():
      return 'dead', f'its lease expired {self.age_s - self.ttl_s():.0f} s ago'
    if self.age_s > 2 * float(h.get('heartbeat_s', HEARTBEAT_S)):
      return 'stale', None
    return 'live', None


def _read_claims(workdir: epath.Path) -> list[Claim]:
  """Every lease file in ``workdir``, but those withdrawn or released since the listing."""
  claims = []
  for kind in ('candidate', 'held'):
    for path in workdir.glob(f'{_PREFIX}{kind}.*.json'):
      try:
        text, mtime = path.read_text(), _modified(path)
      except FileNotFoundError:
        continue
      try:
        holder = json.loads(text)
      except json.JSONDecodeError:  # Not a file this module wrote whole: judged by its age.
        holder = {}
      renewed = max(float(holder.get('renewed_at', 0)), float(mtime))
      claims.append(Claim(path, path.name[len(f'{_PREFIX}{kind}.'):-len('.json')],
                          kind == 'held', holder, time.time() - renewed))
  return claims


def _modified(path: epath.Path) -> float:
  """When ``path`` was last written or renewed (``os.stat``: epath's also looks up the owner's
  name, which fails for a user id without a passwd entry, as in many containers)."""
  return path.stat().mtime if workdirs.is_remote(path) else os.stat(path).st_mtime


def _write_json(path: epath.Path, data: dict) -> None:
  """Writes ``path`` whole: a local file through a rename, an object store's object at once."""
  text = json.dumps(data, sort_keys=True)
  if workdirs.is_remote(path):
    path.write_text(text)
    return
  tmp = path.with_name(path.name + '.tmp')
  tmp.write_text(text)
  tmp.replace(path)


# --------------------------------------------------------------------------------------------
# The lease of one process.
# --------------------------------------------------------------------------------------------


class _Lost(Exception):
  """The lease was taken over by another run."""


class WorkdirLease:
  """This process's lease on ``workdir``: ``acquire`` it, and ``release`` it at the end.

  While held, a daemon thread renews it every ``heartbeat_s`` (a failed renewal is tried again
  at the next beat); ``lost`` says why it was lost (another run took it over), else None.
  """

  def __init__(self, workdir, heartbeat_s: float = HEARTBEAT_S, ttl_s: float = TTL_S):
    self.workdir = workdirs.path(workdir)
    self.token = uuid.uuid4().hex
    self.heartbeat_s, self.ttl_s = heartbeat_s, ttl_s
    self.holder = this_process(heartbeat_s, ttl_s)
    self.lost = None
    self._path = None
    self._stop = threading.Event()
    self._thread = None

  def _file(self, kind: str) -> epath.Path:
    return self.workdir / f'{_PREFIX}{kind}.{self.token}.json'

  def acquire(self) -> None:
    """Takes the workdir, or raises ``WorkdirInUseError`` naming the run that holds it."""
    self.workdir.mkdir(parents=True, exist_ok=True)
    waited, contended = False, 0
    while True:
      judged = [(c, *c.verdict(self.holder))
                for c in _read_claims(self.workdir) if c.token != self.token]
      dead = {c.token: (c, why) for c, verdict, why in judged if verdict == 'dead'}
      held = [c for c, verdict, _ in judged if verdict == 'live' and c.held]
      if held:
        raise self._in_use(held[0])
      stale = [c for c, verdict, _ in judged if verdict == 'stale']
      if stale:
        if not waited:
          waited = True
          logging.warning('The workdir %s is held by %s, which has not renewed its lease for '
                          '%.0f s; waiting up to %.0f s for it to expire.', self.workdir,
                          stale[0].describe(), stale[0].age_s, stale[0].ttl_s() - stale[0].age_s)
        time.sleep(STALE_POLL_S)
        continue
      candidates = [c for c, verdict, _ in judged if verdict == 'live']
      if not candidates and self._won(list(dead)):
        for claim, why in dead.values():
          claim.path.unlink(missing_ok=True)
          logging.warning('Took over the workdir %s from %s: %s.', self.workdir,
                          claim.describe(), why)
        self._start_renewing()
        return
      contended = self._back_off(contended, candidates[0] if candidates else None)

  def _won(self, took_over: list[str]) -> bool:
    """Writes this candidate, lists again: True (now held) if no other live claim showed."""
    self.holder['took_over'] = took_over
    candidate = self._file('candidate')
    _write_json(candidate, self.holder)
    others = [c for c in _read_claims(self.workdir)
              if c.token != self.token and c.token not in took_over]
    if others:
      candidate.unlink(missing_ok=True)
      return False
    self._path = self._file('held')
    candidate.rename(self._path)
    return True

  def _back_off(self, contended: int, other: Claim | None) -> int:
    if contended >= CONTENTION_RETRIES:
      raise WorkdirInUseError(
          f'The workdir {self.workdir} is being taken by another run at the same time'
          + (f' ({other.describe()})' if other else '') + '. Choose another --workdir, or run '
          'again once that run has started.')
    time.sleep(random.uniform(*CONTENTION_BACKOFF_S))
    return contended + 1

  def _in_use(self, claim: Claim) -> WorkdirInUseError:
    return WorkdirInUseError(
        f'The workdir {self.workdir} is in use by another run: {claim.describe()}; its lease was '
        f'renewed {claim.age_s:.0f} s ago ({claim.path.name}). Two runs in one workdir would '
        'overwrite each other\'s checkpoints and events. Wait for that run to end or stop it, or '
        'choose another --workdir. (A run that died gives the workdir up at once on its own host '
        f'or when SLURM requeues it, and {claim.ttl_s():.0f} s after its last renewal elsewhere.)')

  # ---- Renewal.

  def _start_renewing(self) -> None:
    logging.info('This run holds the workdir %s (%s), renewed every %g s, expiring %g s '
                 'after its last renewal.', self.workdir, self._path.name, self.heartbeat_s,
                 self.ttl_s)
    self._thread = threading.Thread(target=self._renew_until_released, daemon=True,
                                    name='workdir_lease')
    self._thread.start()

  def renew(self) -> None:
    """Renews the lease once; raises ``_Lost`` if another run has taken it over."""
    if workdirs.is_remote(self._path):
      if not self._path.exists():
        raise _Lost(f'its lease file {self._path.name} was removed')
      self.holder['renewed_at'] = time.time()
      _write_json(self._path, self.holder)
    else:
      try:  # The modification time is the renewal: no new blocks, so a full disk cannot stop it.
        os.utime(self._path)
      except FileNotFoundError:
        raise _Lost(f'its lease file {self._path.name} was removed') from None
    for claim in _read_claims(self.workdir):
      if self.token in claim.holder.get('took_over', ()):
        raise _Lost(f'{claim.describe()} took it over')

  def _renew_until_released(self) -> None:
    while not self._stop.wait(self.heartbeat_s):
      try:
        self.renew()
      except _Lost as lost:
        self.lost = str(lost)
        logging.error('This run lost the workdir %s: %s.', self.workdir, self.lost)
        return
      except Exception as error:  # noqa: BLE001  Storage errors: the next beat tries again.
        logging.warning('Renewing the lease on %s failed (%s: %s); retrying in %g s.',
                        self.workdir, type(error).__name__, error, self.heartbeat_s)

  def release(self) -> None:
    """Stops renewing and removes the lease file (a lost lease's file is not this run's)."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    if self._path is not None and self.lost is None:
      self._path.unlink(missing_ok=True)
    self._file('candidate').unlink(missing_ok=True)  # Left by an attempt that raised midway.
    self._path = None


# --------------------------------------------------------------------------------------------
# Every process of a run agrees.
# --------------------------------------------------------------------------------------------


def _from_process_0(text: str) -> str:
  """Process 0's ``text`` on every process (one broadcast of its length, one of its bytes)."""
  if jax.process_count() == 1:
    return text
  data = np.frombuffer(text.encode(), np.uint8).astype(np.int32)
  size = int(multihost_utils.broadcast_one_to_all(np.int32(data.size)))
  if not size:
    return ''
  padded = np.zeros(size, np.int32)
  padded[:min(size, data.size)] = data[:size]
  received = np.asarray(multihost_utils.broadcast_one_to_all(padded))
  return bytes(received.astype(np.uint8).tolist()).decode()


class AgreedLease:
  """The run's lease as every process sees it: held by process 0, checked by all together."""

  def __init__(self, lease: WorkdirLease | None):
    self.lease = lease

  def check(self, step: int) -> None:
    """Raises on every process if the run lost the workdir; call it before writing a checkpoint."""
    lost = _from_process_0((self.lease.lost or '') if self.lease else '')
    if lost:
      raise WorkdirInUseError(
          f'This run lost its workdir: {lost}. It stopped before writing the checkpoint of step '
          f'{step}; the run that holds the workdir now goes on from the checkpoints there.')


@contextlib.contextmanager
def hold(workdir, heartbeat_s: float = HEARTBEAT_S, ttl_s: float = TTL_S):
  """Holds ``workdir`` for the run (process 0 takes the lease) and yields an ``AgreedLease``.

  Every process raises the same ``WorkdirInUseError`` if the workdir is in use.
  """
  lease = WorkdirLease(workdir, heartbeat_s, ttl_s) if jax.process_index() == 0 else None
  try:
    if lease is None:
      refusal = _from_process_0('')
      if refusal:
        raise WorkdirInUseError(refusal)
    else:
      try:
        lease.acquire()
      except Exception as error:
        _from_process_0(str(error) if isinstance(error, WorkdirInUseError) else (
            f'Process 0 could not take the lease on {workdir}: {type(error).__name__}: {error}'))
        raise
      _from_process_0('')
    yield AgreedLease(lease)
  finally:
    if lease is not None:
      lease.release()
