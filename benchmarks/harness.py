"""Throughput of the project beside a PyTorch reference, on whatever device JAX and torch find.

    python -m benchmarks.harness --model=resnet20 --batch_size=128 --dtype=float32 \\
        --parts=step,forward,device_step,torch,input,e2e --json_out=/tmp/bench.json

Parts (``--parts``, comma-separated):

* ``step``, ``forward``: the bare jitted train step (the real optimizer) and the eval forward
  pass on synthetic data already on the device: compile time, median step time, images/s, FLOPs
  per step from XLA's cost analysis and the model FLOP utilisation for ``--peak_tflops``.
* ``device_step``: the device-resident CIFAR path (resnet_jax/data/device_resident.py): ``--steps_per_call``
  steps per call on a synthetic 50,000-image split, with the in-step augmentation.
* ``torch``: the PyTorch twin (benchmarks/torch_resnet.py), train step and forward, in every
  applicable configuration (channels_last, torch.compile; bf16 autocast when --dtype=bfloat16);
  the best one is the reference, and the ratios project / reference are printed.
* ``convs``: where the time goes: every distinct convolution of the model timed alone, forward,
  input gradient and filter gradient, in JAX and in torch.
* ``input``: the tf.data train preprocessing alone, images/s per dataset (digits is real;
  cifar10 comes from tfds.testing.mock_data unless --data_dir has it); ImageNet's train and eval
  preprocessing on real photographs beside PIL + torchvision, per thread count
  (``--input_threads``; benchmarks/inputs.py).
* ``eval``: 10-crop and multi-scale testing (resnet_jax/evaluation/protocols.py) on photographs
  served as ImageNet's validation split, on 1 and 8 simulated CPU devices, each in a process of
  its own: images/s and XLA compilations (benchmarks/evaluation.py, which also runs alone).
* ``resume``: the time to the first ImageNet train batch after a resume at 10%, 50% and 90% of
  an epoch, which should not grow with the position (benchmarks/resume.py, which also runs alone).
* ``e2e``: ``train_and_evaluate``'s real loop on cifar10 (mock data unless prepared): tf.data
  one step per call (the default), tf.data and the device-resident path ``--steps_per_call``
  steps per call; images/s from its steps_per_sec summaries.

Take figures side by side in one run and quote ratios: a shared machine moves absolute numbers.

This file reads the flags and runs the parts; each part has its module in this package (``step``,
``torch_step``, ``convs``, ``inputs``, ``evaluation``, ``resume``, ``end_to_end``), all timed by
``timing`` and reported by ``report``.
"""

import json
import os
import tempfile

from absl import app, flags

from benchmarks import evaluation, inputs, resume
from benchmarks import report as bench_report
from benchmarks.convs import bench_convs
from benchmarks.end_to_end import bench_e2e
from benchmarks.settings import Settings
from benchmarks.step import device_step_timer, jax_timers
from benchmarks.timing import time_all
from benchmarks.torch_step import TORCH_VARIANTS, torch_timers
from resnet_jax import library_logs, models

PARTS = ('step', 'forward', 'device_step', 'torch', 'convs', 'input', 'eval', 'resume', 'e2e')
FLAGS = flags.FLAGS
flags.DEFINE_string('model', 'resnet20', 'Any name of resnet_jax.models.MODEL_NAMES.')
flags.DEFINE_integer('batch_size', 128, 'Global batch size.')
flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'Compute dtype.')
flags.DEFINE_integer('steps', 5, 'Timed steps per window.')
flags.DEFINE_integer('repeats', 5, 'Timed windows; the median window gives the step time.')
flags.DEFINE_float('peak_tflops', 0, 'Peak TFLOP/s of one device for the MFU (0: no MFU).')
flags.DEFINE_list('parts', ['step', 'forward', 'torch'], f'Any of {", ".join(PARTS)}.')
flags.DEFINE_list('torch_variants', list(TORCH_VARIANTS),
                  'Torch configurations to try; bf16 autocast follows --dtype.')
flags.DEFINE_bool('compare_fusion_barriers', True,
                  'Also time the train step with config.cpu_fusion_barriers off (they act on '
                  'CPU devices only).')
flags.DEFINE_integer('steps_per_call', 10, 'Steps per call of device_step and of the e2e runs '
                     'that run several.')
flags.DEFINE_integer('e2e_steps', 60, 'Steps of each end-to-end run (logged every 10).')
flags.DEFINE_integer('e2e_repeats', 2, 'End-to-end runs of each input path, taking turns.')
flags.DEFINE_list('input_threads', ['1', '2'], 'Thread counts of the ImageNet input timings.')
flags.DEFINE_integer('input_batch_size', 64, 'Images per batch of the ImageNet input timings.')
flags.DEFINE_list('input_kinds', ['train', 'eval'],
                  f'ImageNet preprocessing timed, any of {", ".join(inputs.KINDS)} (train_v2: '
                  'torchvision\'s "new recipe" augmentation).')
flags.DEFINE_string('data_dir', None, 'tfds data_dir (default: a temporary one, mocked).')
flags.DEFINE_string('json_out', os.path.join(tempfile.gettempdir(), 'resnet_jax_bench.json'),
                    'Where the results go as JSON.')
REPORTED_FLAGS = ('model', 'batch_size', 'dtype', 'steps', 'repeats', 'peak_tflops', 'parts',
                  'torch_variants', 'steps_per_call', 'e2e_steps', 'e2e_repeats')


def check_flags() -> None:
  unknown = (set(FLAGS.parts) - set(PARTS) | set(FLAGS.torch_variants) - set(TORCH_VARIANTS)
             | set(FLAGS.input_kinds) - set(inputs.KINDS))
  if unknown:
    raise app.UsageError(f'Unknown part, torch variant or input kind {sorted(unknown)}; parts: '
                         f'{PARTS}, torch variants: {TORCH_VARIANTS}, input kinds: '
                         f'{inputs.KINDS}.')
  if FLAGS.model not in models.MODEL_NAMES:
    raise app.UsageError(f'Unknown model {FLAGS.model!r}; use one of {models.MODEL_NAMES}.')


def run_parts(settings: Settings, parts: set) -> list[dict]:
  """The rows of every part asked for: the timers of step, forward, device_step and torch
  interleaved in one ``time_all``, then each other part on its own."""
  cifar = models.model_family(settings.model) == 'cifar'
  timers = []
  if parts & {'step', 'forward'}:
    timers += jax_timers(settings, parts, FLAGS.compare_fusion_barriers)
  if 'device_step' in parts and cifar:
    timers.append(device_step_timer(settings))
  if 'torch' in parts:
    timers += torch_timers(settings, FLAGS.torch_variants)
  results = time_all(timers, **settings.timing) if timers else []
  for r in results:
    if r['part'] == 'device_step':
      r['note'] += f'; 64k steps: {64_000 * r["step_s"] / 60:.1f} min'
  if 'convs' in parts:
    results += bench_convs(settings)
  if not cifar and parts & {'device_step', 'e2e'}:
    results.append(dict(part='skipped', impl='device_step, e2e', note='CIFAR-family only'))
    parts = parts - {'device_step', 'e2e'}
  if 'input' in parts:
    results += time_all(inputs.timers([int(n) for n in FLAGS.input_threads],
                                      FLAGS.input_batch_size, FLAGS.input_kinds),
                        **settings.timing)
    results += inputs.train_pipeline_rows(settings)
  if 'e2e' in parts:
    results += bench_e2e(settings, FLAGS.e2e_steps, FLAGS.e2e_repeats)
  return results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  check_flags()
  library_logs.use_cpu_without_accelerators()
  parts = set(FLAGS.parts)
  with tempfile.TemporaryDirectory() as tmp:
    settings = Settings(model=FLAGS.model, batch_size=FLAGS.batch_size, dtype=FLAGS.dtype,
                        steps=FLAGS.steps, repeats=FLAGS.repeats, peak_tflops=FLAGS.peak_tflops,
                        steps_per_call=FLAGS.steps_per_call, data_dir=FLAGS.data_dir or tmp)
    results = run_parts(settings, parts)
  # Parts with tables of their own: they time whole passes, not steps.
  evaluation_rows = evaluation.timings(rounds=FLAGS.repeats) if 'eval' in parts else []
  resume_rows = resume.resume_timings(repeats=FLAGS.repeats) if 'resume' in parts else []
  report = dict(bench_report.environment({f: FLAGS[f].value for f in REPORTED_FLAGS}),
                results=results,
                ratios=bench_report.ratios(results, 'images_per_s', settings.steps_per_call),
                best_window_ratios=bench_report.ratios(results, 'best_images_per_s',
                                                       settings.steps_per_call),
                cpu_time_ratios=inputs.ratios(results, 'images_per_cpu_s'),
                evaluation=evaluation_rows, resume=resume_rows)
  bench_report.print_report(report)
  with open(FLAGS.json_out, 'w') as f:
    json.dump(report, f, indent=2, default=str)
  print(f'JSON: {FLAGS.json_out}')


if __name__ == '__main__':
  app.run(main)
