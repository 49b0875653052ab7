"""benchmarks/harness.py runs as a user runs it, and its FLOP counts match a hand count."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # Benchmark runs: `python -m pytest -m slow`.

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
                  f'--json_out={json_out}'], check=True, timeout=600)
  report = json.loads(json_out.read_text())
  timed = rows(report, 'input')
  for impl in ('tf.data train, 1 thread', 'torchvision train, 1 thread',
               'tf.data eval, 1 thread', 'torchvision eval, 1 thread'):
    assert timed[impl]['images_per_s'] > 0 and timed[impl]['images_per_cpu_s'] > 0, impl
  key = 'imagenet train, 1 thread(s): tf.data / torchvision'
  assert report['ratios'][key] == pytest.approx(
      timed['tf.data train, 1 thread']['images_per_s']
      / timed['torchvision train, 1 thread']['images_per_s'])
  assert key in report['cpu_time_ratios']
