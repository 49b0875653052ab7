"""The report on small synthetic event files with hand-known values."""

import json
import os
import statistics

import pytest
from clu import metric_writers

from experiments import report, report_figures, report_runs

# run -> (model, seed, train error at steps 10/20/30, test error at steps 20/30). Nets with seeds
# are <net>/seed<k>; resnet20 and scratch are single runs directly under the root.
DIGITS_RUNS = {
    'plain20/seed0': ('plain20', 0, (0.5, 0.2, 0.05), (0.3, 0.10)),
    'plain20/seed1': ('plain20', 1, (0.5, 0.2, 0.07), (0.3, 0.12)),
    'plain20/seed2': ('plain20', 2, (0.5, 0.2, 0.03), (0.3, 0.08)),
    'plain56/seed0': ('plain56', 0, (0.8, 0.6, 0.40), (0.7, 0.45)),
    'plain56/seed1': ('plain56', 1, (0.9, 0.8, 0.70), (0.8, 0.75)),
    'plain56/seed2': ('plain56', 2, (0.8, 0.7, 0.55), (0.7, 0.50)),
    'resnet20': ('resnet20', 0, (0.4, 0.1, 0.03), (0.2, 0.08)),
    'resnet56/seed0': ('resnet56', 0, (0.3, 0.05, 0.01), (0.15, 0.06)),
    'resnet56/seed1': ('resnet56', 1, (0.3, 0.05, 0.03), (0.15, 0.04)),
    'scratch': ('resnet110', 0, (0.9, 0.8, 0.7), (0.85, 0.75)),  # Not in the sweep.
}


def write_run(root, name, config, scalars_by_step, evals=None):
  workdir = os.path.join(root, name)
  os.makedirs(workdir)
  writer = metric_writers.SummaryWriter(workdir)
  for step, scalars in scalars_by_step.items():
    writer.write_scalars(step, scalars)
  writer.close()
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(config, f)
  for mode, result in (evals or {}).items():
    with open(os.path.join(workdir, f'eval_{mode}.json'), 'w') as f:
      json.dump(result, f)


@pytest.fixture(scope='module')
def digits_root(tmp_path_factory):
  """The digits study's runs, and its report written once."""
  root = str(tmp_path_factory.mktemp('digits'))
  for name, (model, seed, train, test) in DIGITS_RUNS.items():
    scalars = {10: {'train_error_top1': train[0]},
               20: {'train_error_top1': train[1], 'eval_error_top1': test[0]},
               30: {'train_error_top1': train[2], 'eval_error_top1': test[1]}}
    write_run(root, name, {'model': {'name': model}, 'dataset': {'name': 'digits'},
                           'seed': seed}, scalars)
  with open(os.path.join(root, 'sweeps.json'), 'w') as f:
    json.dump(['depth_study:digits'], f)
  report.write_report(root)
  return root


def net_of(name):
  return name.split('/')[0]


def test_results_json_holds_every_run_and_each_nets_spread_over_seeds(digits_root):
  with open(os.path.join(digits_root, 'results.json')) as f:
    results = json.load(f)
  assert set(results['runs']) == set(DIGITS_RUNS)
  for name, (_, seed, train, test) in DIGITS_RUNS.items():
    entry = results['runs'][name]
    assert (entry['net'], entry['seed'], entry['steps']) == (net_of(name), seed, 30)
    assert entry['train_error'] == pytest.approx(train[-1], rel=1e-6)
    assert entry['test_error'] == pytest.approx(test[-1], rel=1e-6)
  assert set(results['networks']) == {'plain20', 'plain56', 'resnet20', 'resnet56', 'scratch'}
  assert results['std_ddof'] == 1
  for net, aggregate in results['networks'].items():
    members = {n: r for n, r in DIGITS_RUNS.items() if net_of(n) == net}
    assert aggregate['runs'] == list(members)
    assert aggregate['seeds'] == [seed for _, seed, _, _ in members.values()]
    for key, index in (('train_error', 2), ('test_error', 3)):
      finals = [r[index][-1] for r in members.values()]
      assert aggregate[key]['n'] == len(finals)
      assert aggregate[key]['best'] == pytest.approx(min(finals), rel=1e-6)
      assert aggregate[key]['mean'] == pytest.approx(statistics.mean(finals), rel=1e-6)
      if len(finals) == 1:
        assert aggregate[key]['std'] is None  # A sample std needs two runs.
      else:  # statistics.stdev: the sample standard deviation.
        assert aggregate[key]['std'] == pytest.approx(statistics.stdev(finals), rel=1e-5)


def test_report_tables_best_mean_std_per_net_beside_the_paper(digits_root):
  with open(os.path.join(digits_root, 'report.md')) as f:
    text = f.read()
  assert '## depth_study:digits' in text and '## other runs' in text
  # Self-contained: the paper is cited by name and table, not by a file users do not have.
  assert 'PAPER.md' not in text and 'Deep Residual Learning for Image Recognition' in text
  assert 'sample standard deviation' in text
  assert ("| net | n | steps | train error (%) | test error, digits (%) | paper's Table 6, "
          'CIFAR-10 test error (%) |') in text
  lines = text.splitlines()
  # By hand: plain-56 trains to 40, 70, 55 %: mean 55, deviations -15, 15, 0, so the sample std
  # is sqrt(450 / 2) = 15; its test errors 45, 75, 50: mean 56.67, sqrt(516.67 / 2) = 16.07.
  assert '| plain56 | 3 | 30 | 40.00 (55.00 ± 15.00) | 45.00 (56.67 ± 16.07) | — |' in lines
  assert '| plain20 | 3 | 30 | 3.00 (5.00 ± 2.00) | 8.00 (10.00 ± 2.00) | — |' in lines
  assert '| resnet20 | 1 | 30 | 3.00 | 8.00 | 8.75 |' in lines  # One run: its value alone.
  # 1 and 3 %: sqrt(2) = 1.41; the best test error (4 %) is the other seed's.
  assert '| resnet56 | 2 | 30 | 1.00 (2.00 ± 1.41) | 4.00 (5.00 ± 1.41) | 6.97 |' in lines
  # Table 6 gives ResNet-110 over its 5 runs in the same form.
  assert '| scratch | 1 | 30 | 70.00 | 75.00 | 6.43 (6.61 ± 0.16) |' in lines
  # The degradation finding on the means: 55 - 5 = +50 points for plain nets, 2 - 3 = -1 for
  # ResNets.
  assert ('- Deeper plain net: plain-56 ends at 55.00% training error (mean of 3 seeds), '
          'plain-20 at 5.00% (mean of 3 seeds) (+50.00 points).') in lines
  assert ('- Deeper residual net: ResNet-56 ends at 2.00% training error (mean of 2 seeds), '
          'ResNet-20 at 3.00% (-1.00 points).') in lines
  # Every run, with its seed.
  assert '| plain56/seed1 | 1 | 30 | 70.00 | 75.00 |' in lines
  assert '| resnet20 | 0 | 30 | 3.00 | 8.00 |' in lines
  assert '![Figure 6, depth_study:digits](figure6_depth_study_digits.png)' in lines
  with open(os.path.join(digits_root, 'figure6_depth_study_digits.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  assert 'Figure 7' not in text  # No checkpoints, no layer responses.


def test_figure_6_draws_every_seed_in_its_nets_colour(digits_root):
  nets = report_runs.networks(report_runs.read_runs(digits_root))
  names = ['plain20', 'plain56', 'resnet20', 'resnet56']
  fig = report_figures.training_curves_figure(names, nets)
  plain, residual = fig.axes
  # A training (dashed) and a test (solid) line per run: 3 + 3 plain runs, 1 + 2 ResNet runs.
  assert len(plain.lines) == 2 * 6 and len(residual.lines) == 2 * 3
  assert [t.get_text() for t in plain.get_legend().get_texts()] == [
      'plain-20 (3 seeds)', 'plain-56 (3 seeds)']
  assert [t.get_text() for t in residual.get_legend().get_texts()] == [
      'ResNet-20', 'ResNet-56 (2 seeds)']
  colours = [line.get_color() for line in plain.lines]
  assert len(set(colours[:6])) == 1 and len(set(colours[6:])) == 1 and colours[0] != colours[6]
  # The last test point of plain-56's seed 1 (75 % at step 30).
  assert list(plain.lines[9].get_xydata()[-1]) == pytest.approx([30, 75])
  report_figures.plt.close(fig)


def test_imagenet_table_shows_evaluation_modes_and_tables_3_and_4(tmp_path):
  root = str(tmp_path)
  scalars = {100: {'train_error_top1': 0.5, 'eval_error_top1': 0.3, 'eval_error_top5': 0.1}}
  write_run(root, 'resnet34_A', {'model': {'name': 'resnet34', 'shortcut': 'A'},
                                 'dataset': {'name': 'imagenet2012'}}, scalars,
            evals={'ten_crop': {'error_top1': 0.27, 'error_top5': 0.09}})
  # No shortcut in the config: the ImageNet default, B.
  write_run(root, 'resnet34_B', {'model': {'name': 'resnet34', 'shortcut': None},
                                 'dataset': {'name': 'imagenet2012'}}, scalars,
            evals={'multi_scale': {'error_top1': 0.2, 'error_top5': 0.05}})
  with open(os.path.join(root, 'sweeps.json'), 'w') as f:
    json.dump(['shortcuts'], f)

  report.write_report(root)

  with open(os.path.join(root, 'report.md')) as f:
    lines = f.read().splitlines()
  assert ('| resnet34_A | 1 | 100 | 50.00 | 30.00 / 10.00 | 27.00 / 9.00 | 25.03 / 7.76 | — | — |'
          in lines)
  assert ('| resnet34_B | 1 | 100 | 50.00 | 30.00 / 10.00 | — | 24.52 / 7.46 | 20.00 / 5.00 | '
          '21.84 / 5.71 |') in lines


def test_a_root_without_runs_is_an_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='No run'):
    report.write_report(str(tmp_path))


def test_the_preactivation_study_sets_each_unit_beside_the_other_at_each_depth(tmp_path):
  # (model, seed) -> (final train error, final test error).
  runs = {('resnet110', 0): (0.02, 0.10), ('resnet110', 1): (0.04, 0.12),
          ('preact_resnet110', 0): (0.01, 0.07), ('preact_resnet110', 1): (0.01, 0.09),
          ('resnet1001', 0): (0.30, 0.40), ('preact_resnet1001', 0): (0.00, 0.05)}
  root = str(tmp_path)
  for (model, seed), (train, test) in runs.items():
    write_run(root, f'{model}/seed{seed}', {'model': {'name': model},
                                            'dataset': {'name': 'digits'}, 'seed': seed},
              {5: {'train_error_top1': train, 'eval_error_top1': test}})
  with open(os.path.join(root, 'sweeps.json'), 'w') as f:
    json.dump(['preact_study:digits'], f)
  report.write_report(root, with_layer_responses=False)
  with open(os.path.join(root, 'report.md')) as f:
    text = f.read()
  assert "Identity Mappings' Tables 3-4, CIFAR-10 test error (%) |" in text
  assert '| preact_resnet110 | 2 | 5 | 1.00 (1.00 ± 0.00) | 7.00 (8.00 ± 1.41) | 6.37 |' in text
  assert '| resnet1001 | 1 | 5 | 30.00 | 40.00 | 7.61 |' in text
  assert ('- 110 layers, pre-activation vs original (means over 2 seeds): test error 8.00% '
          'against 11.00% (-3.00 points); training error 1.00% against 3.00% (-2.00 points).'
          in text)
  assert '- 1001 layers, pre-activation vs original (means over 1 seed): test error 5.00%' in text
  assert ('- Deeper pre-activation net: pre-act ResNet-1001 ends at 0.00% training error, '
          'pre-act ResNet-110 at 1.00% (mean of 2 seeds) (-1.00 points).') in text
  nets = report_runs.networks(report_runs.read_runs(root))
  fig = report_figures.training_curves_figure(list(nets), nets)
  assert [ax.get_title().split(' nets')[0] for ax in fig.axes] == ['residual', 'pre-activation']
  report_figures.plt.close(fig)


def test_a_runs_final_errors_come_from_its_results_file_where_it_has_one(tmp_path):
  from resnet_jax import events  # pylint: disable=import-outside-toplevel
  scalars = {10: {'train_error_top1': 0.5, 'eval_error_top1': 0.25, 'eval_error_top5': 0.0625}}
  write_run(str(tmp_path), 'resnet20', {'model': {'name': 'resnet20'}, 'seed': 0}, scalars)
  assert report_runs.read_run(str(tmp_path), 'resnet20', 'resnet20')['test_error'] == 0.25
  # The evaluations' own record (written at full precision, beside the event files) wins.
  events.append_result(str(tmp_path / 'resnet20'), {'step': 10, 'eval_error_top1': 0.125,
                                                     'eval_error_top5': 0.03125})
  run = report_runs.read_run(str(tmp_path), 'resnet20', 'resnet20')
  assert (run['test_error'], run['test_error_top5']) == (0.125, 0.03125)


def test_a_resnet50_of_a_named_recipe_is_set_beside_its_published_error(tmp_path):
  from resnet_jax import events  # pylint: disable=import-outside-toplevel
  imagenet = {'name': 'imagenet2012'}
  for name, model in (('r50_a3', 'resnet50'), ('r18_a3', 'resnet18')):
    write_run(str(tmp_path), name, {'model': {'name': model}, 'dataset': imagenet, 'seed': 0,
                                    'recipe': 'rsb_a3'}, {10: {'train_error_top1': 0.5}})
    events.append_result(str(tmp_path / name), {'step': 10, 'eval_error_top1': 0.25,
                                                'eval_error_top5': 0.0625})
  report.write_report(str(tmp_path), with_layer_responses=False)
  text = (tmp_path / 'report.md').read_text()
  # ResNet-50 only: RSB's A3 is 78.1 % top-1, 21.90 % error; no average in an A3 run.
  assert ('| r50_a3 | rsb_a3 | 1 | 25.00 | — | 21.90 ("ResNet strikes back" A3 (78.1 %)) |'
          in text.splitlines())
  assert '| r18_a3 |' not in text.split('published top-1 error')[-1]


def test_nets_of_one_depth_draw_no_depth_finding(tmp_path):
  for name in ('resnet20_paper', 'resnet20_modern'):  # An ablation: one net, two recipes.
    write_run(str(tmp_path), name, {'model': {'name': 'resnet20'}, 'seed': 0},
              {10: {'train_error_top1': 0.5 if 'modern' in name else 0.0,
                    'eval_error_top1': 0.01}})
  report.write_report(str(tmp_path), with_layer_responses=False)
  text = (tmp_path / 'report.md').read_text()
  assert '| resnet20_modern | 1 | 10 | 50.00 |' in text and 'Deeper' not in text
