"""Turns a sweep's workdirs into results.json, report.md and the paper's figures.

    python -m experiments.report --root=/tmp/depth_digits

Reads each run's TensorBoard events (``resnet_jax.events``) and ``config.json``; writes
``<root>/results.json`` ({run: {"train_error", "test_error", "steps"}}, errors as fractions: the
last logged ``train_error_top1`` and ``eval_error_top1``), ``<root>/report.md`` (a table per study
with the paper's numbers, ``experiments.paper_results``, beside ours, each cited by its table)
and PNG figures: Figure 6 (training error dashed, test error bold, vs iterations; plain nets
left, ResNets right) and, for runs with checkpoints, Figure 7 (std of each 3x3 layer's response,
in layer order and sorted). A study is a sweep that ``experiments.run`` recorded in ``<root>/sweeps.json``; other runs form one more.
"""

import json
import os
import re

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
from absl import app, flags, logging  # pylint: disable=wrong-import-position
from etils import epath  # pylint: disable=wrong-import-position

from experiments import paper_results, sweeps  # pylint: disable=wrong-import-position
from resnet_jax import checkpointing, events, models  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS


def define_flags():
  """The command line flags (defined on demand, so that tests can import this module)."""
  flags.DEFINE_string('root', None, 'Directory that holds one workdir per run.')
  flags.DEFINE_bool('layer_responses', True, 'Compute Figure 7 for runs that have checkpoints.')
  flags.mark_flag_as_required('root')


EVAL_MODES = ('ten_crop', 'multi_scale')


# --------------------------------------------------------------------------------------------
# Reading runs.
# --------------------------------------------------------------------------------------------


def read_run(workdir: str) -> dict | None:
  """A run's curves, final errors and config, or None if it logged nothing yet."""
  scalars = events.read_scalars(workdir)
  if 'train_error_top1' not in scalars:
    return None
  config_path = os.path.join(workdir, 'config.json')
  config = {}
  if os.path.exists(config_path):
    with open(config_path) as f:
      config = json.load(f)
  evals = {}
  for mode in EVAL_MODES:
    if os.path.exists(sweeps.eval_result_path(workdir, mode)):
      with open(sweeps.eval_result_path(workdir, mode)) as f:
        evals[mode] = json.load(f)
  train_steps, train_errors = scalars['train_error_top1']
  test = scalars.get('eval_error_top1')
  test5 = scalars.get('eval_error_top5')
  return {
      'workdir': workdir, 'scalars': scalars, 'config': config, 'evals': evals,
      'model': config.get('model', {}).get('name', os.path.basename(workdir)),
      'train_error': float(train_errors[-1]),
      'test_error': None if test is None else float(test[1][-1]),
      'test_error_top5': None if test5 is None else float(test5[1][-1]),
      'steps': int(train_steps[-1]),
  }


def read_runs(root: str) -> dict[str, dict]:
  runs = {}
  for name in sorted(os.listdir(root)):
    workdir = os.path.join(root, name)
    if os.path.isdir(workdir):
      run = read_run(workdir)
      if run is not None:
        runs[name] = run
  return runs


def studies(root: str, runs: dict) -> dict[str, list[str]]:
  """{study title: run names}: each recorded sweep in sweep order, then any other runs."""
  recorded_file = epath.Path(root) / sweeps.SWEEPS_FILE
  recorded = json.loads(recorded_file.read_text()) if recorded_file.exists() else []
  grouped, seen = {}, set()
  for sweep in recorded:
    if sweep not in sweeps.SWEEPS:
      continue  # A sweep that no longer exists: its runs count as other runs.
    names = [run.name for run in sweeps.get_sweep(sweep) if run.name in runs]
    if names:
      grouped[sweep] = names
      seen.update(names)
  others = [name for name in runs if name not in seen]
  if others:
    grouped['other runs' if grouped else os.path.basename(os.path.normpath(root))] = others
  return grouped


def is_plain(run: dict) -> bool:
  return run['model'].startswith('plain')


def depth(run: dict) -> int:
  return int(re.sub(r'\D', '', run['model']) or 0)


def label(run: dict) -> str:
  return f'{"plain" if is_plain(run) else "ResNet"}-{depth(run)}'


def shortcut(run: dict) -> str | None:
  """The run's shortcut option (None for plain nets)."""
  if is_plain(run) or run['model'] not in models.MODEL_SPECS:
    return None
  return run['config'].get('model', {}).get('shortcut') or models.MODEL_SPECS[
      run['model']]['shortcut']


def is_imagenet(run: dict) -> bool:
  return run['config'].get('dataset', {}).get('name') == 'imagenet2012'


# --------------------------------------------------------------------------------------------
# Tables.
# --------------------------------------------------------------------------------------------


def ours(top1, top5=None) -> str:
  """Our errors (fractions) in %, 'top-1 / top-5' when both are known."""
  if top1 is None:
    return '—'
  return f'{100 * top1:.2f}' + ('' if top5 is None else f' / {100 * top5:.2f}')


def paper(errors) -> str:
  """The paper's errors (in %): one number, or a (top-1, top-5) pair whose top-5 may be None."""
  if errors is None:
    return '—'
  errors = errors if isinstance(errors, tuple) else (errors,)
  return ' / '.join(f'{e:.2f}' for e in errors if e is not None)


def evaluated(run: dict, mode: str) -> str:
  result = run['evals'].get(mode)
  return '—' if result is None else ours(result['error_top1'], result['error_top5'])


def table(names: list[str], runs: dict) -> list[str]:
  """Markdown rows: our final errors beside the paper's, columns fitting the dataset."""
  imagenet = any(is_imagenet(runs[n]) for n in names)
  if imagenet:
    header = ['run', 'steps', 'train top-1 (%)', 'val top-1 / top-5, centre (%)',
              '10-crop (%)', "paper's Tables 2-3, 10-crop (%)", 'multi-scale (%)',
              "paper's Table 4, multi-scale (%)"]
  else:
    dataset = runs[names[0]]['config'].get('dataset', {}).get('name', '?')
    header = ['run', 'steps', 'train error (%)', f'test error, {dataset} (%)',
              "paper's Table 6, CIFAR-10 test error (%)"]
  rows = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for name in names:
    run = runs[name]
    cells = [name, str(run['steps']), ours(run['train_error'])]
    if imagenet:
      key = (run['model'], shortcut(run))
      cells += [ours(run['test_error'], run['test_error_top5']),
                evaluated(run, 'ten_crop'), paper(paper_results.IMAGENET_TEN_CROP.get(key)),
                evaluated(run, 'multi_scale'),
                paper(paper_results.IMAGENET_MULTI_SCALE.get(key))]
    else:
      cells += [ours(run['test_error']),
                paper(paper_results.CIFAR10_TEST_ERROR.get(run['model']))]
    rows.append('| ' + ' | '.join(cells) + ' |')
  return rows


def depth_findings(names: list[str], runs: dict) -> list[str]:
  """The paper's Figure 6 claim on our numbers: deeper plain nets train worse, ResNets do not."""
  lines = []
  for plain, family in ((True, 'plain'), (False, 'residual')):
    members = sorted((runs[n] for n in names if is_plain(runs[n]) == plain), key=depth)
    if len(members) >= 2:
      shallow, deep = members[0], members[-1]
      change = 100 * (deep['train_error'] - shallow['train_error'])
      lines.append(f'- Deeper {family} net: {label(deep)} ends at '
                   f'{ours(deep["train_error"])}% training error, {label(shallow)} at '
                   f'{ours(shallow["train_error"])}% ({change:+.2f} points).')
  return lines


# --------------------------------------------------------------------------------------------
# Figures.
# --------------------------------------------------------------------------------------------


def _panels(names, runs):
  """[(title, runs)]: plain nets left, ResNets right (only the families present)."""
  families = [('plain', [runs[n] for n in names if is_plain(runs[n])]),
              ('residual', [runs[n] for n in names if not is_plain(runs[n])])]
  return [(title, sorted(members, key=depth)) for title, members in families if members]


def _colour(index):
  return plt.get_cmap('tab10')(index % 10)


def plot_training_curves(names: list[str], runs: dict, path: str) -> None:
  """Figure 6: training error dashed, test error bold, against iterations."""
  panels = _panels(names, runs)
  fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False,
                           sharey=True)
  for ax, (title, members) in zip(axes[0], panels):
    for index, run in enumerate(members):
      colour = _colour(index)
      train_steps, train_errors = run['scalars']['train_error_top1']
      ax.plot(train_steps, 100 * train_errors, '--', color=colour, linewidth=1)
      if 'eval_error_top1' in run['scalars']:
        test_steps, test_errors = run['scalars']['eval_error_top1']
        ax.plot(test_steps, 100 * test_errors, '-', color=colour, linewidth=2.5,
                label=label(run))
    ax.set_title(f'{title} nets (dashed: training error, bold: test error)', fontsize=10)
    ax.set_xlabel('iterations')
    ax.grid(alpha=0.3)
    ax.legend()
  axes[0][0].set_ylabel('error (%)')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_layer_responses(responses: dict[str, list[float]], runs: dict, path: str) -> None:
  """Figure 7: std of each 3x3 layer's response, in layer order (top) and sorted (bottom)."""
  fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6.5))
  ordered = sorted(responses, key=lambda n: (not is_plain(runs[n]), depth(runs[n])))
  for index, name in enumerate(ordered):
    style = dict(color=_colour(index), linestyle='--' if is_plain(runs[name]) else '-',
                 marker='.', linewidth=1, label=label(runs[name]))
    stds = responses[name]
    top.plot(range(1, len(stds) + 1), stds, **style)
    bottom.plot(range(1, len(stds) + 1), sorted(stds, reverse=True), **style)
  top.set_xlabel('layer index (original)')
  bottom.set_xlabel('layer index (sorted by magnitude)')
  for ax in (top, bottom):
    ax.set_ylabel('std')
    ax.grid(alpha=0.3)
  top.legend(fontsize=8, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def layer_responses(names: list[str], runs: dict) -> dict[str, list[float]]:
  """{run: response stds} for the runs that have a checkpoint and a readable test split."""
  # pylint: disable=import-outside-toplevel  (TensorFlow and compilation only when needed)
  from resnet_jax import errors
  from resnet_jax.evaluation import layer_responses as analysis
  responses = {}
  for name in names:
    workdir = runs[name]['workdir']
    if not checkpointing.has_checkpoints(workdir):
      continue
    try:
      responses[name] = [std for _, std in analysis.workdir_layer_responses(workdir)]
    except (errors.DatasetNotAvailableError, errors.CheckpointError) as error:
      logging.warning('No layer responses for %s: %s', name, error)
  return responses


# --------------------------------------------------------------------------------------------
# The report.
# --------------------------------------------------------------------------------------------


def write_report(root: str, with_layer_responses: bool = True) -> dict:
  """Writes results.json, report.md and the figures under ``root``; returns the results."""
  runs = read_runs(root)
  if not runs:
    raise FileNotFoundError(f'No run under {root} has logged training summaries yet.')
  results = {name: {k: run[k] for k in ('train_error', 'test_error', 'steps')}
             for name, run in runs.items()}
  with open(os.path.join(root, 'results.json'), 'w') as f:
    json.dump(results, f, indent=2)

  lines = [f'# Results under `{root}`', '',
           'Final errors: training error = the last logged `train_error_top1` (the average over '
           'the last logging interval), test error = the last `eval_error_top1` on the whole '
           f'eval split. The paper: {paper_results.CITATION}; its numbers are cited by table.',
           '']
  for title, names in studies(root, runs).items():
    slug = re.sub(r'[^A-Za-z0-9]+', '_', title).strip('_')
    lines += [f'## {title}', '', *table(names, runs), '']
    findings = depth_findings(names, runs)
    if findings:
      lines += ['Paper (Figure 6): the deeper plain net has the higher training error; the '
                'deeper ResNet does not.', '', *findings, '']
    figure6 = f'figure6_{slug}.png'
    plot_training_curves(names, runs, os.path.join(root, figure6))
    lines += [f'![Figure 6, {title}]({figure6})', '']
    responses = layer_responses(names, runs) if with_layer_responses else {}
    if responses:
      figure7 = f'figure7_{slug}.png'
      plot_layer_responses(responses, runs, os.path.join(root, figure7))
      lines += ['Figure 7: std of each 3x3 layer\'s output after BN, before the ReLU/addition, '
                'on the test split (plain dashed, ResNets solid).', '',
                f'![Figure 7, {title}]({figure7})', '']
  with open(os.path.join(root, 'report.md'), 'w') as f:
    f.write('\n'.join(lines))
  return results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  write_report(FLAGS.root, FLAGS.layer_responses)
  print(f'Wrote {os.path.join(FLAGS.root, "report.md")} and results.json.')


if __name__ == '__main__':
  define_flags()
  app.run(main)
