"""The report on small synthetic event files with hand-known values."""

import json
import os

import pytest
from clu import metric_writers

from experiments import report

# run -> (model, train error at steps 10/20/30, test error at steps 20/30).
DIGITS_RUNS = {
    'plain20': ('plain20', (0.5, 0.2, 0.05), (0.3, 0.1)),
    'plain56': ('plain56', (0.8, 0.6, 0.4), (0.7, 0.45)),
    'resnet20': ('resnet20', (0.4, 0.1, 0.02), (0.2, 0.08)),
    'resnet56': ('resnet56', (0.3, 0.05, 0.01), (0.15, 0.06)),
    'scratch': ('resnet32', (0.9, 0.8, 0.7), (0.85, 0.75)),  # Not in the sweep.
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


@pytest.fixture
def digits_root(tmp_path):
  root = str(tmp_path)
  for name, (model, train, test) in DIGITS_RUNS.items():
    scalars = {10: {'train_error_top1': train[0]},
               20: {'train_error_top1': train[1], 'eval_error_top1': test[0]},
               30: {'train_error_top1': train[2], 'eval_error_top1': test[1]}}
    write_run(root, name, {'model': {'name': model}, 'dataset': {'name': 'digits'}}, scalars)
  with open(os.path.join(root, 'sweeps.json'), 'w') as f:
    json.dump(['depth_study:digits'], f)
  return root


def test_results_json_holds_the_final_errors(digits_root):
  report.write_report(digits_root)
  with open(os.path.join(digits_root, 'results.json')) as f:
    results = json.load(f)
  assert set(results) == set(DIGITS_RUNS)
  for name, (_, train, test) in DIGITS_RUNS.items():
    assert results[name]['train_error'] == pytest.approx(train[-1], rel=1e-6)
    assert results[name]['test_error'] == pytest.approx(test[-1], rel=1e-6)
    assert results[name]['steps'] == 30


def test_report_tables_the_study_beside_the_paper(digits_root):
  report.write_report(digits_root)
  with open(os.path.join(digits_root, 'report.md')) as f:
    text = f.read()
  assert '## depth_study:digits' in text and '## other runs' in text
  # Self-contained: the paper is cited by name and table, not by a file users do not have.
  assert 'PAPER.md' not in text and 'Deep Residual Learning for Image Recognition' in text
  assert "| run | steps | train error (%) | test error, digits (%) | paper's Table 6, CIFAR-10 " \
         'test error (%) |' in text
  lines = text.splitlines()
  # Final errors in %, and Table 6's CIFAR-10 test error of the same net.
  assert '| plain56 | 30 | 40.00 | 45.00 | — |' in lines
  assert '| resnet20 | 30 | 2.00 | 8.00 | 8.75 |' in lines
  assert '| resnet56 | 30 | 1.00 | 6.00 | 6.97 |' in lines
  assert '| scratch | 30 | 70.00 | 75.00 | 7.51 |' in lines
  # The degradation finding: 40 - 5 = +35 points for plain nets, 1 - 2 = -1 for ResNets.
  assert any('plain-56' in l and 'plain-20' in l and '+35.00 points' in l for l in lines)
  assert any('ResNet-56' in l and 'ResNet-20' in l and '-1.00 points' in l for l in lines)
  assert '![Figure 6, depth_study:digits](figure6_depth_study_digits.png)' in lines
  with open(os.path.join(digits_root, 'figure6_depth_study_digits.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  assert 'Figure 7' not in text  # No checkpoints, no layer responses.


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
  assert ('| resnet34_A | 100 | 50.00 | 30.00 / 10.00 | 27.00 / 9.00 | 25.03 / 7.76 | — | — |'
          in lines)
  assert ('| resnet34_B | 100 | 50.00 | 30.00 / 10.00 | — | 24.52 / 7.46 | 20.00 / 5.00 | '
          '21.84 / 5.71 |') in lines


def test_a_root_without_runs_is_an_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='No run'):
    report.write_report(str(tmp_path))
