"""The benchmark's report: ratios side by side, the printed tables and the environment."""

import contextlib
import datetime
import math
import os
import platform

import jax
import numpy as np

from benchmarks import evaluation, inputs, resume
from benchmarks.end_to_end import e2e_name


def best(results, part, prefix, key) -> dict | None:
  """The row of ``part`` whose impl starts with ``prefix`` and whose ``key`` is largest."""
  rows = [r for r in results if r['part'] == part and r['impl'].startswith(prefix) and key in r]
  return max(rows, key=lambda r: r[key], default=None)


def ratios(results, key, steps_per_call: int) -> dict:
  """Project / reference and path / path ratios of ``key`` (median or best images/s)."""
  pairs = {
      'train_step jax / best torch': (best(results, 'train_step', 'jax', key),
                                      best(results, 'train_step', 'torch', key)),
      'forward jax / best torch': (best(results, 'forward', 'jax', key),
                                   best(results, 'forward', 'torch', key)),
      'train_step jax / cpu_fusion_barriers off': (
          best(results, 'train_step', 'jax', key),
          best(results, 'train_step', 'variant: cpu_fusion_barriers', key)),
      'device_step / train_step': (best(results, 'device_step', 'jax', key),
                                   best(results, 'train_step', 'jax', key)),
      'e2e device-resident / e2e tf.data, 1 step per call': (
          best(results, 'e2e', 'jax device', key), best(results, 'e2e', e2e_name(False, 1), key)),
      'e2e device-resident / e2e tf.data, same steps per call': (
          best(results, 'e2e', 'jax device', key),
          best(results, 'e2e', e2e_name(False, steps_per_call), key)),
      'e2e tf.data, steps per call / 1 step per call': (
          best(results, 'e2e', e2e_name(False, steps_per_call), key),
          best(results, 'e2e', e2e_name(False, 1), key)),
  }
  found = {name: a[key] / b[key] for name, (a, b) in pairs.items() if a and b}
  found.update(inputs.ratios(results, key))
  for r in results:
    if 'bare_step_before' in r and key == 'images_per_s':
      found[f'e2e {r["impl"][4:]} / bare step timed just before'] = (
          r[key] / r['bare_step_before'])
  return found


def fmt(value, spec):
  """``value`` formatted, or a dash as wide as ``spec`` when it is unknown."""
  if isinstance(value, (int, float)) and not math.isnan(value):
    return format(value, spec)
  return format('-', '>' + spec.split('.')[0])


def print_report(report):
  """The table of the timed steps, the ratios, then the tables of the eval and resume parts."""
  flags = report['flags']
  print(f"\n{report['device']}, {report['date']}; model {flags['model']}, batch "
        f"{flags['batch_size']}, {flags['dtype']}")
  header = (f"{'part':<12}{'impl':<34}{'compile s':>10}{'step ms':>10}{'min ms':>9}"
            f"{'images/s':>10}{'GFLOP/step':>11}{'TFLOP/s':>9}{'MFU':>7}  note")
  print(header + '\n' + '-' * len(header))
  for r in report['results']:
    if r['part'] == 'conv':
      print(f"{'conv':<12}{r['impl']:<34}  fwd {r['forward_ms']:.2f} ms, input grad "
            f"{r['input_grad_ms']:.2f} ms, filter grad {r['filter_grad_ms']:.2f} ms  {r['note']}")
      continue
    step_ms = r['step_s'] * 1e3 if 'step_s' in r else None
    min_ms = r['min_step_s'] * 1e3 if 'min_step_s' in r else None
    gflop = r['flops_per_step'] / 1e9 if 'flops_per_step' in r else None
    print(f"{r['part']:<12}{r['impl']:<34}{fmt(r.get('compile_s'), '10.1f')}"
          f"{fmt(step_ms, '10.1f')}{fmt(min_ms, '9.1f')}{fmt(r.get('images_per_s'), '10.0f')}"
          f"{fmt(gflop, '11.2f')}{fmt(r.get('tflops'), '9.3f')}{fmt(r.get('mfu'), '7.1%')}"
          f"  {r.get('note', '')}" + (f"; {r['images_per_cpu_s']:.0f} images per CPU second"
                                      if 'images_per_cpu_s' in r else ''))
  for name, value in report['ratios'].items():
    best_windows = report['best_window_ratios'].get(name)
    cpu_time = report['cpu_time_ratios'].get(name)
    print(f'ratio {name}: {value:.2f}' + (f' (fastest windows: {best_windows:.2f})'
                                          if best_windows else '')
          + (f' (per CPU second: {cpu_time:.2f})' if cpu_time else ''))
  if report['evaluation']:
    print('\n' + evaluation.table(report['evaluation']))
  if report['resume']:
    print('\n' + resume.table(report['resume']))


def cpu_name() -> str:
  """The host CPU's model name (Linux), else what platform knows."""
  with contextlib.suppress(OSError):
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  return platform.processor() or platform.machine()


def environment(flags: dict) -> dict:
  """Date, devices, library versions, XLA flags and the run's ``flags``."""
  device = jax.devices()[0]
  versions = {'jax': jax.__version__, 'numpy': np.__version__}
  with contextlib.suppress(ImportError):
    import torch  # pylint: disable=import-outside-toplevel
    versions['torch'] = torch.__version__
  return dict(date=datetime.datetime.now().isoformat(timespec='seconds'),
              device=f'{jax.device_count()} x {device.platform} {device.device_kind} '
                     f'({os.cpu_count()} host cores, {cpu_name()})',
              versions=versions, xla_flags=os.environ.get('XLA_FLAGS', ''), flags=flags)
