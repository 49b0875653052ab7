"""Turns a sweep's workdirs into results.json, report.md and the paper's figures.

    python -m experiments.report --root=/tmp/depth_digits

A run is a workdir directly under ``<root>`` or, for a sweep with seeds, ``<root>/<net>/seed<k>``;
a net's runs are its seeds. Reads each run's TensorBoard events (``report_runs``) and
``config.json``; writes ``<root>/results.json`` (``{"runs": {run: {"net", "seed", "train_error",
"test_error", "steps"}}, "networks": {net: {"runs", "seeds", "train_error": {"n", "best", "mean",
"std"}, "test_error": ...}}}``, errors as fractions: the last logged ``train_error_top1`` and
``eval_error_top1``; best = lowest, std = the sample standard deviation, ddof=1),
``<root>/report.md`` (a table per study: per net n and best (mean ± std), the paper's form,
beside the paper's numbers, ``experiments.paper_results``, each cited by its table) and PNG
figures (``report_figures``): Figure 6 (training error dashed, test error bold, vs iterations,
every seed; plain nets left, ResNets right) and, for runs with checkpoints, Figure 7 (std of each
3x3 layer's response, in layer order and sorted). A study is a sweep that ``experiments.run``
recorded in ``<root>/sweeps.json``; other runs form one more.
"""

import json
import os
import re

from absl import app, flags

from experiments import paper_results
from experiments.report_figures import (
  layer_responses,
  layer_responses_figure,
  save,
  training_curves_figure,
)
from experiments.report_runs import (
  STD_DDOF,
  depth,
  family,
  is_imagenet,
  is_preact,
  label,
  networks,
  read_runs,
  shortcut,
  spread,
  studies,
)
from resnet_jax import library_logs

FLAGS = flags.FLAGS


def define_flags():
  """The command line flags (defined on demand, so that tests can import this module)."""
  flags.DEFINE_string('root', None, 'Directory that holds one workdir per run.')
  flags.DEFINE_bool('layer_responses', True, 'Compute Figure 7 for runs that have checkpoints.')
  library_logs.define_verbose_flag()
  flags.mark_flag_as_required('root')




# --------------------------------------------------------------------------------------------
# Tables.
# --------------------------------------------------------------------------------------------


def best_mean_std(summary: dict | None, scale: float = 100) -> str:
  """'best (mean ± std)' as the paper writes it (Table 6), the value alone for one run."""
  if summary is None:
    return '—'
  text = f'{scale * summary["best"]:.2f}'
  if summary['std'] is None:
    return text
  return text + f' ({scale * summary["mean"]:.2f} ± {scale * summary["std"]:.2f})'


def ours(members: list[dict], key: str, top5: bool = False) -> str:
  """Our errors over a net's runs in %: best (mean ± std), then ' / ' and top-5's likewise."""
  cell = best_mean_std(spread([run[key] for run in members]))
  top5_summary = spread([run[f'{key}_top5'] for run in members]) if top5 else None
  return cell if top5_summary is None else f'{cell} / {best_mean_std(top5_summary)}'


def paper(errors) -> str:
  """The paper's errors (in %): one number, or a (top-1, top-5) pair whose top-5 may be None."""
  if errors is None:
    return '—'
  errors = errors if isinstance(errors, tuple) else (errors,)
  return ' / '.join(f'{e:.2f}' for e in errors if e is not None)


def paper_cifar10(model: str, preact_study: bool = False) -> str:
  """Table 6's test error of ``model``: best, or 'best (mean ± std)' where it gives them; in
  the pre-activation study, that paper's comparison."""
  if preact_study:
    return paper(paper_results.PREACT_CIFAR10_TEST_ERROR.get(model))
  best = paper_results.CIFAR10_TEST_ERROR.get(model)
  if model not in paper_results.CIFAR10_TEST_ERROR_MEAN_STD:
    return paper(best)
  mean, std = paper_results.CIFAR10_TEST_ERROR_MEAN_STD[model]
  return best_mean_std({'best': best, 'mean': mean, 'std': std}, scale=1)


def steps(members: list[dict]) -> str:
  """The runs' last logged step: one number, or the range over runs that stopped apart."""
  low, high = min(run['steps'] for run in members), max(run['steps'] for run in members)
  return str(low) if low == high else f'{low}–{high}'


def table(names: list[str], nets: dict) -> list[str]:
  """Markdown rows, one per net: our errors beside the paper's, columns fitting the dataset."""
  imagenet = any(is_imagenet(nets[n][0]) for n in names)
  if imagenet:
    header = ['net', 'n', 'steps', 'train top-1 (%)', 'val top-1 / top-5, centre (%)',
              '10-crop (%)', "paper's Tables 2-3, 10-crop (%)", 'multi-scale (%)',
              "paper's Table 4, multi-scale (%)"]
  else:
    dataset = nets[names[0]][0]['config'].get('dataset', {}).get('name', '?')
    preact_study = any(is_preact(nets[n][0]) for n in names)
    header = ['net', 'n', 'steps', 'train error (%)', f'test error, {dataset} (%)',
              "Identity Mappings' Tables 3-4, CIFAR-10 test error (%)" if preact_study
              else "paper's Table 6, CIFAR-10 test error (%)"]
  rows = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for name in names:
    members = nets[name]
    first = members[0]
    cells = [name, str(len(members)), steps(members), ours(members, 'train_error')]
    if imagenet:
      key = (first['model'], shortcut(first))
      cells += [ours(members, 'test_error', top5=True),
                ours(members, 'ten_crop_error', top5=True),
                paper(paper_results.IMAGENET_TEN_CROP.get(key)),
                ours(members, 'multi_scale_error', top5=True),
                paper(paper_results.IMAGENET_MULTI_SCALE.get(key))]
    else:
      cells += [ours(members, 'test_error'), paper_cifar10(first['model'], preact_study)]
    rows.append('| ' + ' | '.join(cells) + ' |')
  return rows


def recipe_table(names: list[str], nets: dict) -> list[str]:
  """Markdown rows, one per ResNet-50 trained with a named recipe that has a published figure
  (``config.recipe``): its centre-crop top-1 error, of the weights and of their average where
  it has one, beside the source's; none without."""
  rows = []
  for name in names:
    members = nets[name]
    recipe = members[0]['config'].get('recipe')
    if members[0]['model'] == 'resnet50' and recipe in paper_results.RECIPE_TOP1_ERROR:
      published, source = paper_results.RECIPE_TOP1_ERROR[recipe]
      rows.append(f'| {name} | {recipe} | {len(members)} | {ours(members, "test_error")} | '
                  f'{ours(members, "ema_test_error")} | {published:.2f} ({source}) |')
  if not rows:
    return []
  return ['| net | recipe | n | val top-1, centre (%) | its EMA (%) | published top-1 error (%) |',
          '|---|---|---|---|---|---|', *rows]


def run_table(names: list[str], nets: dict) -> list[str]:
  """Markdown rows, one per run of the nets: its seed and final errors in %."""
  rows = ['| run | seed | steps | train error (%) | test error (%) |', '|---|---|---|---|---|']
  for name in names:
    for run in nets[name]:
      rows.append(f'| {run["name"]} | {run["seed"]} | {run["steps"]} | '
                  f'{ours([run], "train_error")} | {ours([run], "test_error")} |')
  return rows


def depth_findings(names: list[str], nets: dict) -> list[str]:
  """The paper's Figure 6 claim on our mean errors: deeper plain nets train worse, ResNets not
  (pre-activation ResNets apart)."""
  lines = []
  for kind, words in (('plain', 'plain'), ('ResNet', 'residual'),
                      ('pre-act ResNet', 'pre-activation')):
    members = sorted((n for n in names if family(nets[n][0]) == kind),
                     key=lambda n: depth(nets[n][0]))
    if len(members) >= 2 and depth(nets[members[0]][0]) < depth(nets[members[-1]][0]):
      shallow, deep = (spread([run['train_error'] for run in nets[n]])
                       for n in (members[0], members[-1]))
      over = lambda summary: '' if summary['n'] == 1 else f' (mean of {summary["n"]} seeds)'
      lines.append(f'- Deeper {words} net: {label(nets[members[-1]][0])} ends at '
                   f'{100 * deep["mean"]:.2f}% training error{over(deep)}, '
                   f'{label(nets[members[0]][0])} at {100 * shallow["mean"]:.2f}%'
                   f'{over(shallow)} ({100 * (deep["mean"] - shallow["mean"]):+.2f} points).')
  return lines


def unit_findings(names: list[str], nets: dict) -> list[str]:
  """"Identity Mappings"' claim on our mean errors: at each depth, the pre-activation unit
  against the original."""
  by_depth = {}
  for name in names:
    by_depth.setdefault(depth(nets[name][0]), {})[family(nets[name][0])] = nets[name]
  lines = []
  for layers, pair in sorted(by_depth.items()):
    if {'ResNet', 'pre-act ResNet'} <= pair.keys():
      cells = []
      for key, what in (('test_error', 'test'), ('train_error', 'training')):
        preact, original = (spread([run[key] for run in pair[kind]])
                            for kind in ('pre-act ResNet', 'ResNet'))
        cells.append(f'{what} error {100 * preact["mean"]:.2f}% against '
                     f'{100 * original["mean"]:.2f}% '
                     f'({100 * (preact["mean"] - original["mean"]):+.2f} points)')
      seeds = len(pair['pre-act ResNet'])
      lines.append(f'- {layers} layers, pre-activation vs original (means over {seeds} '
                   f'seed{"s" if seeds > 1 else ""}): ' + '; '.join(cells) + '.')
  return lines


# --------------------------------------------------------------------------------------------
# The report.
# --------------------------------------------------------------------------------------------


def results(runs: dict, nets: dict) -> dict:
  """results.json: one entry per run (with its seed), one aggregate over its seeds per net."""
  errors = ('train_error', 'test_error')
  return {
      'runs': {name: {k: run[k] for k in ('net', 'seed', *errors, 'steps')}
               for name, run in runs.items()},
      'networks': {net: {'runs': [run['name'] for run in members],
                         'seeds': [run['seed'] for run in members],
                         **{k: spread([run[k] for run in members]) for k in errors}}
                   for net, members in nets.items()},
      'std_ddof': STD_DDOF,
  }


def write_report(root: str, with_layer_responses: bool = True) -> dict:
  """Writes results.json, report.md and the figures under ``root``; returns the results."""
  runs = read_runs(root)
  if not runs:
    raise FileNotFoundError(f'No run under {root} has logged training summaries yet.')
  nets = networks(runs)
  summary = results(runs, nets)
  with open(os.path.join(root, 'results.json'), 'w') as f:
    json.dump(summary, f, indent=2)

  lines = [f'# Results under `{root}`', '',
           ('Final errors: training error = the last logged `train_error_top1` (the average over '
            'the last logging interval), test error = the last `eval_error_top1` on the whole '
            'eval split. Per net over its n runs (seeds), as the paper gives ResNet-110 in its '
            'Table 6: best (mean ± std), best = the lowest of each column on its own, std = the '
            'sample standard deviation (n - 1 in the denominator); one run: its value. The '
            f'paper: {paper_results.CITATION}; its numbers are cited by table.'),
           '']
  for title, names in studies(root, nets).items():
    slug = re.sub(r'[^A-Za-z0-9]+', '_', title).strip('_')
    lines += [f'## {title}', '', *table(names, nets), '']
    recipes = recipe_table(names, nets)
    if recipes:
      lines += ['Named recipes beside their published figures:', '', *recipes, '']
    findings, units = depth_findings(names, nets), unit_findings(names, nets)
    if units:
      lines += [(f'{paper_results.PREACT_CITATION}, Tables 3-4: on CIFAR-10 the pre-activation '
                 'unit has the lower test error at every depth, by more the deeper the net, and '
                 'the original ResNet-1001 tests worse than the original ResNet-164.'), '',
                *units, *findings, '']
    elif findings:
      lines += [('Paper (Figure 6): the deeper plain net has the higher training error; the '
                 'deeper ResNet does not.'), '', *findings, '']
    if any(len(nets[n]) > 1 for n in names):
      lines += ['Every run:', '', *run_table(names, nets), '']
    figure6 = f'figure6_{slug}.png'
    save(training_curves_figure(names, nets), os.path.join(root, figure6))
    lines += [f'![Figure 6, {title}]({figure6})', '']
    study_runs = [run for n in names for run in nets[n]]
    responses = layer_responses(study_runs) if with_layer_responses else {}
    if responses:
      figure7 = f'figure7_{slug}.png'
      save(layer_responses_figure(responses, names, nets), os.path.join(root, figure7))
      lines += [('Figure 7: std of each 3x3 layer\'s output after BN, before the ReLU/addition, '
                 'on the test split (plain dashed, ResNets solid; every seed in its net\'s '
                 'colour).'), '',
                f'![Figure 7, {title}]({figure7})', '']
  with open(os.path.join(root, 'report.md'), 'w') as f:
    f.write('\n'.join(lines))
  return summary


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  library_logs.configure(FLAGS.verbose)  # No INFO line per event file read.
  summary = write_report(FLAGS.root, FLAGS.layer_responses)
  print(f'Report of {len(summary["runs"])} runs of {len(summary["networks"])} nets -> '
        f'{os.path.join(FLAGS.root, "report.md")} (results.json beside it).')


if __name__ == '__main__':
  define_flags()
  app.run(main)
