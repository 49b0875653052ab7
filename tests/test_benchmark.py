"""The benchmark commands run as a user runs them, and the harness's FLOP counts match a hand
count."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

RESNET20_MULTIPLY_ADDS = 40.6e6  # One 32x32 forward pass, counted by hand in test_models.py.
BATCH = 8


@pytest.fixture(scope='module')
def report(tmp_path_factory):
  json_out = tmp_path_factory.mktemp('bench') / 'bench.json'
  subprocess.run([
      sys.executable, '-m', 'benchmarks.harness', '--model=resnet20', f'--batch_size={BATCH}',
      '--parts=step,forward,device_step,torch', '--torch_variants=eager', '--steps=1',
      '--repeats=2', '--steps_per_call=2', '--compare_fusion_barriers=false',
      '--peak_tflops=1', f'--json_out={json_out}'], check=True, timeout=600)
  return json.loads(json_out.read_text())


def rows(report, part):
  return {r['impl']: r for r in report['results'] if r['part'] == part}


def test_every_part_reports_positive_throughput(report):
  timed = [(part, impl) for part in ('train_step', 'forward', 'device_step')
           for impl in rows(report, part)]
  assert {('train_step', 'jax'), ('forward', 'jax'), ('device_step', 'jax')} <= set(timed)
  assert {'torch eager'} <= set(rows(report, 'train_step')) & set(rows(report, 'forward'))
  for r in report['results']:
    assert r['images_per_s'] > 0 and r['step_s'] > 0, r


def test_ratios_against_torch_are_printed(report):
  ratios = report['ratios']
  step = rows(report, 'train_step')
  assert ratios['train_step jax / best torch'] == pytest.approx(
      step['jax']['images_per_s'] / step['torch eager']['images_per_s'])
  assert 'forward jax / best torch' in ratios and 'device_step / train_step' in ratios


def test_xla_flops_match_the_hand_count(report):
  """Forward: 2 FLOPs per multiply-add (XLA:CPU's count is a few % low); train ~3x forward."""
  forward = rows(report, 'forward')['jax']['flops_per_step']
  assert forward == pytest.approx(2 * RESNET20_MULTIPLY_ADDS * BATCH, rel=0.12)
  assert 2.5 < rows(report, 'train_step')['jax']['flops_per_step'] / forward < 3.6


def test_model_flop_utilisation_uses_the_given_peak(report):
  step = rows(report, 'train_step')['jax']
  achieved_tflops = step['flops_per_step'] / step['step_s'] / 1e12
  assert step['mfu'] == pytest.approx(achieved_tflops / 1.0)  # --peak_tflops=1


def test_input_part_times_the_project_beside_torchvision_on_real_photographs(tmp_path):
  json_out = tmp_path / 'input.json'
  subprocess.run([sys.executable, '-m', 'benchmarks.harness', '--parts=input',
                  '--input_threads=1', '--input_batch_size=8', '--steps=1', '--repeats=1',
                  '--input_kinds=train,eval,train_v2', f'--json_out={json_out}'], check=True,
                 timeout=600)
  report = json.loads(json_out.read_text())
  timed = rows(report, 'input')
  for impl in ('tf.data train, 1 thread', 'torchvision train, 1 thread',
               'tf.data eval, 1 thread', 'torchvision eval, 1 thread',
               'tf.data train_v2, 1 thread', 'torchvision train_v2, 1 thread'):
    assert timed[impl]['images_per_s'] > 0 and timed[impl]['images_per_cpu_s'] > 0, impl
  key = 'imagenet train, 1 thread(s): tf.data / torchvision'
  assert report['ratios'][key] == pytest.approx(
      timed['tf.data train, 1 thread']['images_per_s']
      / timed['torchvision train, 1 thread']['images_per_s'])
  assert key in report['cpu_time_ratios']
  assert 'imagenet train_v2, 1 thread(s): tf.data / torchvision' in report['cpu_time_ratios']


def test_resume_part_times_the_first_batch_at_each_position():
  out = subprocess.run([
      sys.executable, '-m', 'benchmarks.resume', '--records=256', '--files=8',
      '--shuffle_buffer=32', '--batch_size=8', '--repeats=1', '--steady_batches=2',
      '--positions=0.1,0.9'], check=True, timeout=600, capture_output=True, text=True).stdout
  lines = out.splitlines()
  assert '256 records in 8 TFRecord files, shuffle_buffer 32, batch 8, 32 steps an epoch' in lines
  rows = [line.split() for line in lines if line.strip().startswith(('10%', '90%'))]
  assert [(r[0], r[1]) for r in rows] == [('10%', '3'), ('90%', '28')]
  assert all(float(value) > 0 for r in rows for value in r[2:]), rows
  assert lines[-1].startswith('first batch at 90% / at 10%: ')


def test_eval_part_times_both_modes_on_simulated_devices():
  from benchmarks import evaluation  # pylint: disable=import-outside-toplevel
  rows = evaluation.timings(device_counts=(2,), num_images=2, batch_size=1, rounds=1)
  assert [(r['devices'], r['mode']) for r in rows] == [(2, 'ten_crop'), (2, 'multi_scale')]
  ten_crop, multi_scale = rows
  assert ten_crop['xla_compilations'] == ten_crop['compiled_shapes'] == 1
  # Two photographs, one landscape and one portrait: five scales each.
  assert multi_scale['xla_compilations'] == multi_scale['compiled_shapes'] == 10
  assert all(r['images'] == 2 and r['images_per_s'] > 0 for r in rows)
  assert evaluation.table(rows).count('\n') == 3


def test_synthetic_parts_import_without_tensorflow():
  code = ("import sys; sys.modules['tensorflow'] = sys.modules['tensorflow_datasets'] = None; "
          'import benchmarks.step, benchmarks.torch_step, benchmarks.convs, benchmarks.settings, '
          'benchmarks.timing')
  subprocess.run([sys.executable, '-c', code], check=True, timeout=300)
