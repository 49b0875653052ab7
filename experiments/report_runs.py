"""The runs of a sweep's root, read back: their curves, final errors and configs, grouped by net
and by study, and the facts a report sorts and labels them by (plain or residual, depth, shortcut).

A run is a workdir directly under ``<root>`` or, for a sweep with seeds, ``<root>/<net>/seed<k>``;
a net's runs are its seeds. Each run's TensorBoard events (``resnet_jax.events``: the curves),
its ``results.jsonl`` (the final errors) and ``config.json`` are read.
"""

import json
import os
import re

import numpy as np
from etils import epath

from experiments import sweeps
from resnet_jax import events, models

EVAL_MODES = ('ten_crop', 'multi_scale')  # tools/evaluate.py's results a run may hold.
SEED_DIR = re.compile(r'seed(\d+)')
# The standard deviation over a net's seeds: the sample one (n - 1 in the denominator).
STD_DDOF = 1




def read_run(root: str, name: str, net: str, seed: int | None = None) -> dict | None:
  """Run ``root/name``'s curves, final errors and config, or None if it logged nothing yet.

  ``net`` names the net whose seeds it is one of; ``seed`` is the one its directory names, used
  where its config records none.
  """
  workdir = os.path.join(root, name)
  scalars = events.read_scalars(workdir)
  if 'train_error_top1' not in scalars:
    return None
  config_path = os.path.join(workdir, 'config.json')
  config = {}
  if os.path.exists(config_path):
    with open(config_path) as f:
      config = json.load(f)
  run = {'name': name, 'workdir': workdir, 'scalars': scalars, 'config': config, 'net': net,
         'seed': config.get('seed', seed),
         'model': config.get('model', {}).get('name', net),
         'train_error': float(scalars['train_error_top1'][1][-1]),
         'steps': int(scalars['train_error_top1'][0][-1])}
  # The last evaluation: its line of results.jsonl; the event files of a run without one.
  results = events.read_results(workdir)
  for key, tag in (('test_error', 'eval_error_top1'), ('test_error_top5', 'eval_error_top5'),
                   ('ema_test_error', 'ema_eval_error_top1')):
    if results and tag in results[-1]:
      run[key] = float(results[-1][tag])
    else:
      run[key] = float(scalars[tag][1][-1]) if tag in scalars else None
  for mode in EVAL_MODES:
    result = {}
    if os.path.exists(sweeps.eval_result_path(workdir, mode)):
      with open(sweeps.eval_result_path(workdir, mode)) as f:
        result = json.load(f)
    run[f'{mode}_error'] = result.get('error_top1')
    run[f'{mode}_error_top5'] = result.get('error_top5')
  return run


def read_runs(root: str) -> dict[str, dict]:
  """{run name: run}: each workdir under ``root`` that logged, and each ``<net>/seed<k>``."""
  runs = {}
  for net in sorted(os.listdir(root)):
    workdir = os.path.join(root, net)
    if not os.path.isdir(workdir):
      continue
    run = read_run(root, net, net)
    if run is not None:
      runs[net] = run
      continue
    seeds = sorted(int(m[1]) for m in map(SEED_DIR.fullmatch, os.listdir(workdir)) if m)
    for seed in seeds:
      name = sweeps.seed_run_name(net, seed)
      run = read_run(root, name, net, seed)
      if run is not None:
        runs[name] = run
  return runs


def networks(runs: dict) -> dict[str, list[dict]]:
  """{net: its runs}, in the order of ``runs``."""
  grouped = {}
  for run in runs.values():
    grouped.setdefault(run['net'], []).append(run)
  return grouped


def studies(root: str, nets: dict) -> dict[str, list[str]]:
  """{study title: net names}: each recorded sweep in sweep order, then any other nets."""
  recorded_file = epath.Path(root) / sweeps.SWEEPS_FILE
  recorded = json.loads(recorded_file.read_text()) if recorded_file.exists() else []
  grouped, seen = {}, set()
  for sweep in recorded:
    if sweep not in sweeps.SWEEPS:
      continue  # A sweep that no longer exists: its nets count as other nets.
    names = [run.name for run in sweeps.get_sweep(sweep) if run.name in nets]
    if names:
      grouped[sweep] = names
      seen.update(names)
  others = [name for name in nets if name not in seen]
  if others:
    grouped['other runs' if grouped else os.path.basename(os.path.normpath(root))] = others
  return grouped


def spread(values: list) -> dict | None:
  """n, best (the lowest), mean and sample std (None for n = 1) of the known errors, or None."""
  known = np.array([v for v in values if v is not None], np.float64)
  if not known.size:
    return None
  return {'n': int(known.size), 'best': float(known.min()), 'mean': float(known.mean()),
          'std': float(known.std(ddof=STD_DDOF)) if known.size > 1 else None}


def is_plain(run: dict) -> bool:
  return run['model'].startswith('plain')


def is_preact(run: dict) -> bool:
  return run['model'].startswith('preact_')


def depth(run: dict) -> int:
  """The net's depth: the first number of its name (wrn28_10: 28)."""
  found = re.search(r'\d+', run['model'])
  return int(found[0]) if found else 0


def family(run: dict) -> str:
  return 'plain' if is_plain(run) else 'pre-act ResNet' if is_preact(run) else 'ResNet'


def label(run: dict) -> str:
  return f'{family(run)}-{depth(run)}'


def shortcut(run: dict) -> str | None:
  """The run's shortcut option (None for plain nets)."""
  if is_plain(run) or run['model'] not in models.MODEL_SPECS:
    return None
  return run['config'].get('model', {}).get('shortcut') or models.MODEL_SPECS[
      run['model']]['shortcut']


def is_imagenet(run: dict) -> bool:
  return run['config'].get('dataset', {}).get('name') == 'imagenet2012'
