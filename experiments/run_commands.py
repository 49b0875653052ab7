"""From a sweep's run to its ``main.py`` command, its workdir and its log: what every launcher
starts."""

import os
import sys

from absl import app
from etils import epath

from experiments import sweeps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




def format_value(value) -> str:
  """A config value as ml_collections' --config.key=value flag parses it."""
  if isinstance(value, (tuple, list)):
    return '(' + ','.join(format_value(v) for v in value) + (',)' if len(value) == 1 else ')')
  return str(value)


def workdir(run: sweeps.Run, root: str) -> str:
  """``root/<run.name>``; ``root`` may be local or remote (``gs://bucket/runs``)."""
  return os.fspath(epath.Path(root) / run.name)


def command(run: sweeps.Run, root: str, python: str = 'python', main: str = 'main.py') -> list:
  """The argv that trains ``run`` into ``root/<run.name>``."""
  return [python, main, f'--config={run.config}', f'--workdir={workdir(run, root)}',
          *(f'--config.{k}={format_value(v)}' for k, v in run.overrides.items())]


def local_command(run: sweeps.Run, root: str) -> list:
  """``command`` with this Python and this checkout's main.py, for processes started here."""
  return command(run, root, python=sys.executable, main=os.path.join(ROOT, 'main.py'))


def log_path(log_dir: str, run: sweeps.Run) -> str:
  return os.path.join(log_dir, run.name.replace('/', '_') + '.log')


def default_log_dir(root: str, log_dir: str | None) -> str:
  """``log_dir``, else ``<root>/logs``; an absolute local path (the scheduler writes it)."""
  if log_dir is None:
    if '://' in root:
      raise app.UsageError(f'--root={root} is not a local directory: give --run_logs_dir, a local '
                           '(or shared) directory for the runs\' console output.')
    log_dir = os.path.join(root, 'logs')
  return os.path.abspath(log_dir)
