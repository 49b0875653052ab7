"""What a run says about its backend: the first log line names it, an ImageNet run on CPUs warns
that it takes days, and where there is no TPU libtpu (requirements-tpu.txt) stays silent."""

import glob
import os
import re
import subprocess
import sys

import pytest

from resnet_jax import library_logs
from tests.harness import ROOT, tiny_digits_flags

# An absl record of Python code (the C++ libraries' records name .cc files).
PYTHON_LOG_LINE = re.compile(r'^[IWEF]\d{4} [\d:.]+ +\d+ \S+\.py:\d+\] (.*)$', re.MULTILINE)
LIBTPU_ERRORS = ('INVALID_ARGUMENT', 'TPU_WORKER_HOSTNAMES', "Unable to initialize backend 'tpu'")

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    any(glob.glob(p) for p in library_logs.ACCELERATOR_DEVICES),
    reason='an accelerator is present: JAX chooses it, not the CPU these tests expect')]


def python(args, devices=1):
  """Runs Python as a user does: no platform chosen (the test session chooses the CPU), and
  libtpu free to start where it is installed even while another process holds its lock."""
  env = {k: v for k, v in os.environ.items() if k not in ('JAX_PLATFORMS', 'TPU_SKIP_MDS_QUERY')}
  env.update(ALLOW_MULTIPLE_LIBTPU_LOAD='1',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600, check=False)


def assert_no_libtpu_errors(stderr):
  for text in LIBTPU_ERRORS:
    assert text not in stderr, stderr[-3000:]


def test_a_run_names_its_backend_first_and_neither_it_nor_load_run_starts_libtpu(
    data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  trained = python(['main.py', '--config=configs/digits.py', f'--workdir={workdir}',
                    *tiny_digits_flags(data_dir, total_steps=1)], devices=2)
  assert trained.returncode == 0, trained.stderr[-3000:]
  assert PYTHON_LOG_LINE.findall(trained.stderr)[0] == (
      'Backend cpu: 2 x cpu (2 local, 1 process).'), trained.stderr[:3000]
  assert_no_libtpu_errors(trained.stderr)
  loaded = python(['-c', f'import resnet_jax; print(resnet_jax.load_run({workdir!r}).step)'])
  assert loaded.returncode == 0 and loaded.stdout.split()[-1] == '1', loaded.stderr[-3000:]
  assert_no_libtpu_errors(loaded.stderr)


def test_imagenet_on_the_cpu_warns_of_days_and_names_the_gpu_install_before_reading_data(
    tmp_path):
  result = python(['main.py', '--config=configs/imagenet.py:resnet50',
                   f'--workdir={tmp_path / "run"}', f'--config.dataset.data_dir={tmp_path}'])
  assert result.returncode == 2, result.stderr[-3000:]
  warning, = [line for line in PYTHON_LOG_LINE.findall(result.stderr) if 'on the CPU' in line]
  assert re.search(r'trains resnet50 on ImageNet on the CPU: \S+ FLOPs, at least [\d.]+ days',
                   warning), warning
  assert 'pip install -r requirements.txt -r requirements-gpu.txt' in warning
  # Then the data: not prepared in an empty data_dir, so nothing was read.
  assert result.stderr.index(warning) < result.stderr.index('DatasetNotAvailableError')
