"""Workdirs, local or remote (``gs://bucket/run``), through etils' ``epath``: their paths, and
the identity of the run they hold (its ``config.json``).

A local workdir is made absolute, so a run started from another directory finds the same files;
a remote one is kept as it is (``os.path.abspath`` would turn ``gs://b/r`` into a local folder).
"""

import json
import os

import flax
import ml_collections
from etils import epath

from resnet_jax import config_defaults
from resnet_jax.errors import ConfigError


def is_remote(workdir) -> bool:
  return '://' in os.fspath(workdir)


def path(workdir) -> epath.Path:
  """``workdir`` as an ``epath.Path``: absolute if local, unchanged if remote."""
  workdir = os.fspath(workdir)
  return epath.Path(workdir if is_remote(workdir) else os.path.abspath(workdir))


def check_reachable(location) -> None:
  """Raises ``ConfigError`` where the storage of a remote ``location`` (a workdir, a run to start
  from) does not answer: no network, no credentials. One message, where the storage client
  would end the command with its own traceback."""
  if not is_remote(location):
    return
  try:
    path(location).exists()
  except Exception as error:  # pylint: disable=broad-except  (TensorFlow's, fsspec's or gcsfs')
    reason = (str(error).strip().splitlines() or [''])[0]
    raise ConfigError(
        f'{location} cannot be reached ({type(error).__name__}: {reason}). Check that this host '
        'reaches the storage (its network, a proxy) and holds credentials for the bucket (gcloud '
        'auth application-default login; on a Cloud VM, its service account and scopes), or use '
        'a local directory.') from None


# Fields whose change makes a checkpoint belong to a different experiment (the optimizer's name
# and the plateau schedule decide the optimizer state in the checkpoint; init_from and its step
# the weights the run started from).
IDENTITY_FIELDS = ('model', 'dataset.name', 'dataset.image_size', 'seed', 'batch_size',
                   'optimizer.name', 'optimizer.schedule', 'init_from', 'init_from_step')
CONFIG_FILE = 'config.json'


def changed_fields(saved, current, fields) -> list[str]:
  """``'key: saved -> current'`` for each config key under ``fields`` where the two differ.

  ``saved`` and ``current`` are ConfigDicts; keys are dotted.
  """
  saved, current = (flax.traverse_util.flatten_dict(json.loads(c.to_json_best_effort()),
                                                    sep='.') for c in (saved, current))
  return [f'{key}: {saved.get(key)!r} -> {current.get(key)!r}'
          for key in sorted(saved.keys() | current.keys())
          if any(key == f or key.startswith(f + '.') for f in fields)
          and saved.get(key) != current.get(key)]


def check_workdir(config, workdir: str) -> None:
  """Refuses a workdir that is unreachable, unwritable or holds a run of a different
  experiment: reads ``workdir/config.json`` (``save_config``) and compares the fields that define
  the experiment; nothing in the workdir is modified."""
  check_reachable(workdir)
  location = path(workdir)
  if not is_remote(workdir):
    existing = os.fspath(location)
    while not os.path.exists(existing):
      existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
      raise ConfigError(f'The workdir {workdir!r} cannot be written ({existing!r} is not a '
                        'writable directory). Choose another --workdir or fix its permissions.')
  if not (location / CONFIG_FILE).exists():
    return
  changed = changed_fields(load_config(workdir), config, IDENTITY_FIELDS)
  if changed:
    raise ConfigError(
        f'The workdir {workdir!r} holds a run of a different experiment ('
        + '; '.join(changed) + '). Resuming it with this config would mix two runs. Use a new '
        '--workdir, or the config that run was started with.')


def save_bytes(data: bytes, workdir: str, name: str) -> None:
  """Writes ``workdir/name`` whole: a temporary file renamed over it, so an old one stays whole
  where the write fails."""
  directory = path(workdir)
  directory.mkdir(parents=True, exist_ok=True)
  tmp = directory / f'{name}.tmp'
  tmp.write_bytes(data)
  tmp.replace(directory / name)


def save_text(text: str, workdir: str, name: str) -> None:
  save_bytes(text.encode(), workdir, name)


def save_json(value, workdir: str, name: str) -> None:
  save_text(json.dumps(value, indent=2, sort_keys=True), workdir, name)


def save_config(config, workdir: str) -> None:
  """Writes the run's config as ``workdir/config.json`` (what notebooks and resumes read)."""
  save_text(config.to_json_best_effort(indent=2, sort_keys=True), workdir, CONFIG_FILE)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was trained with, laid over today's defaults
  (``config_defaults.get_config``): a field added since the run was saved reads its default,
  the value that reproduces what the run did."""
  config_path = path(workdir) / CONFIG_FILE
  if not config_path.exists():
    raise FileNotFoundError(f'{config_path} does not exist: {workdir!r} is not a training '
                            'workdir.')
  return ml_collections.ConfigDict(_laid_over(config_defaults.get_config().to_dict(),
                                               json.loads(config_path.read_text())))


def _laid_over(defaults: dict, saved: dict) -> dict:
  """``defaults`` with every value of ``saved`` put in its place, section by section."""
  merged = dict(defaults)
  for key, value in saved.items():
    merged[key] = (_laid_over(defaults[key], value)
                   if isinstance(value, dict) and isinstance(defaults.get(key), dict) else value)
  return merged
