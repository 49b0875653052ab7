"""Runs a sweep on this host, submits it to SLURM, runs it on a TPU pod, or prints its commands.

    python -m experiments.run --sweep=depth_study:digits --root=/tmp/depth_digits --seeds=3
    python -m experiments.run --sweep=depth_study:cifar10 --root=/shared/runs --launcher=slurm
    python -m experiments.run --sweep=imagenet_deep --root=gs://bucket/runs --print_commands

Each net of the sweep trains once per seed (``--seeds``, else the sweep's default in
``sweeps.DEFAULT_SEEDS``) into ``<root>/<net>/seed<k>`` with ``--config.seed=<k>``, through
``main.py``, started by one of ``experiments.launchers`` (``--launcher=local``, the default,
``slurm`` or ``tpu``).
A finished run (its latest checkpoint is at the last step) is skipped without starting a
process; an interrupted one resumes from its checkpoint. ``--override=key=value`` (repeatable)
is appended to every run, e.g. ``--override=dataset.data_dir=/data/tfds``.
"""

import ast
import importlib.util
import json
import os
import shlex
import sys

from absl import app, flags, logging
from etils import epath

from experiments import launchers, run_commands, sweeps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS


def _library_logs():
  """``resnet_jax.library_logs``, imported (with jax) only when a command runs."""
  from resnet_jax import library_logs as module  # pylint: disable=import-outside-toplevel
  return module


def define_flags():
  """The command line flags (defined on demand, so that tests can import this module)."""
  flags.DEFINE_string('sweep', None, f'One of: {", ".join(sweeps.SWEEPS)}.')
  flags.DEFINE_string('root', None, 'Directory that holds one workdir per run.')
  flags.DEFINE_integer('seeds', None, 'Runs per net, seeds 0 .. N-1; default: the sweep\'s own '
                       '(experiments/sweeps.py, DEFAULT_SEEDS).')
  flags.DEFINE_bool('print_commands', False, 'Print one main.py command per run; run nothing.')
  flags.DEFINE_multi_string('override', [], 'key=value added to every run, e.g. '
                            'dataset.data_dir=/data/tfds.')
  _library_logs().define_verbose_flag()
  flags.DEFINE_list('only', [], 'Only these nets (every seed) or runs of the sweep, e.g. '
                    'plain20,resnet20/seed0.')
  flags.mark_flags_as_required(['sweep', 'root'])
  launchers.define_flags()


def parse_overrides(pairs: list[str]) -> dict:
  """['a.b=1', 'c=/x'] -> {'a.b': 1, 'c': '/x'}: Python literals where they parse, else text."""
  overrides = {}
  for pair in pairs:
    key, sep, text = pair.partition('=')
    if not sep or not key:
      raise app.UsageError(f'--override={pair!r} is not of the form key=value.')
    try:
      overrides[key] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      overrides[key] = text
  return overrides


def with_overrides(runs: list[sweeps.Run], overrides: dict) -> list[sweeps.Run]:
  return [run._replace(overrides={**run.overrides, **overrides}) for run in runs]


def sweep_runs(name: str, seeds: int | None = None, override_pairs: tuple = ()) -> list:
  """The runs of sweep ``name``: each net once per seed (default: the sweep's), with overrides.

  Raises app.UsageError for an unknown sweep, a seed count below 1 or a ``seed`` override
  (seeds come from ``seeds``, one per run).
  """
  try:
    nets = sweeps.get_sweep(name)
    overrides = parse_overrides(list(override_pairs))
    if 'seed' in overrides:
      raise ValueError('--override=seed=... would give every run the same seed; each run has '
                       'its own (seed k for <net>/seed<k>): use --seeds=N for seeds 0 .. N-1.')
    return sweeps.with_seeds(with_overrides(nets, overrides),
                             sweeps.DEFAULT_SEEDS[name] if seeds is None else seeds)
  except ValueError as error:
    raise app.UsageError(str(error)) from error


def only(runs: list[sweeps.Run], names: list[str]) -> list[sweeps.Run]:
  """The runs of the nets (or runs) ``names``, e.g. every seed of ``resnet20``; all for none."""
  if not names:
    return runs
  unknown = [name for name in names if not any(_picked(run, name) for run in runs)]
  if unknown:
    raise app.UsageError(f'--only={",".join(unknown)}: no such net or run in this sweep; its '
                         f'runs: {", ".join(run.name for run in runs)}.')
  return [run for run in runs if any(_picked(run, name) for name in names)]


def _picked(run: sweeps.Run, name: str) -> bool:
  return run.name == name or run.name.startswith(name + '/')


def load_config(run: sweeps.Run):
  """The ConfigDict that ``run`` trains with (its config file, argument and overrides)."""
  path, _, arg = run.config.partition(':')
  spec = importlib.util.spec_from_file_location('sweep_config', os.path.join(ROOT, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg) if arg else module.get_config()
  config.update_from_flattened_dict(run.overrides)
  return config


def is_finished(run: sweeps.Run, root: str) -> bool:
  """Whether ``root/<run.name>`` holds a checkpoint at the run's last step."""
  # pylint: disable=import-outside-toplevel  (jax, orbax and TensorFlow only when needed)
  from resnet_jax import checkpointing, library_logs
  from resnet_jax.data import datasets
  library_logs.quiet()  # No orbax INFO line per run looked at.
  run_dir = run_commands.workdir(run, root)
  if not checkpointing.has_checkpoints(run_dir):
    return False
  manager = checkpointing.create_manager(run_dir, read_only=True)
  step = manager.latest_step()
  manager.close()
  if step is None:
    return False
  # The run's length as it would resume: this config, with the shards its checkpoints record.
  config = load_config(run)
  plan = datasets.plan_for(config, recorded_shards=checkpointing.recorded_num_shards(run_dir))
  return step >= plan.total_steps


def record_sweep(root: str, name: str) -> None:
  """Adds ``name`` to ``root/sweeps.json``, the list of sweeps that the report tabulates."""
  path = epath.Path(root) / sweeps.SWEEPS_FILE
  names = json.loads(path.read_text()) if path.exists() else []
  if name not in names:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(names + [name]))


def unfinished(runs: list[sweeps.Run], root: str) -> list[sweeps.Run]:
  """The runs still to train; logs those skipped as finished."""
  pending = []
  for run in runs:
    if is_finished(run, root):
      logging.info('Skipping %s: already finished.', run.name)
    else:
      pending.append(run)
  return pending


def run_sweep(name: str, runs: list[sweeps.Run], root: str) -> list[str]:
  """Trains the unfinished runs one after another; returns the names of those that failed."""
  record_sweep(root, name)
  return launchers.local(unfinished(runs, root), root)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  _library_logs().configure(FLAGS.verbose)
  runs = only(sweep_runs(FLAGS.sweep, FLAGS.seeds, FLAGS.override), FLAGS.only)
  launchers.check_flags(FLAGS.root)
  if FLAGS.print_commands:
    for run in runs:
      print(shlex.join(run_commands.command(run, FLAGS.root)))
    return
  pending = unfinished(runs, FLAGS.root)
  if not pending:
    logging.info('Finished sweep %s: all %d runs had finished already -> %s', FLAGS.sweep,
                 len(runs), FLAGS.root)
    return
  if not FLAGS.dry_run:
    record_sweep(FLAGS.root, FLAGS.sweep)
  failures = launchers.launch_from_flags(FLAGS.sweep, pending, FLAGS.root)
  if failures is None:  # A dry run, or a submission that returns before the runs end.
    return
  failed = [run.name for run in pending if not is_finished(run, FLAGS.root)]
  if failed:
    sys.exit(f'These runs did not finish: {", ".join(failed)}; run the sweep again to resume '
             'them.')
  if failures:
    sys.exit(f'Every run finished, but the {FLAGS.launcher} launcher reported {failures} '
             'failure(s): see the runs\' logs.')
  logging.info('Finished sweep %s: %d runs (%d trained now) -> %s; the report: python -m '
               'experiments.report --root=%s', FLAGS.sweep, len(runs), len(pending), FLAGS.root,
               FLAGS.root)


if __name__ == '__main__':
  define_flags()
  app.run(main)
