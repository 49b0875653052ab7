"""Throughput of 10-crop and multi-scale testing on a mock ImageNet, on 1 and 8 CPU devices.

    python -m benchmarks.evaluation --devices=1,8 --baseline_root=/tmp/evalpar_old

Real photographs (``resnet_jax.testing.photos``: scikit-learn's samples), resized to 500x375 and
375x500 (``SIZES``), are served as ``imagenet2012``'s validation split through
``tfds.testing.mock_data`` and the real tfds path; the net is ``--model`` (float32, random
weights). Each device count runs in a process of its own (the simulated device count,
``XLA_FLAGS=--xla_force_host_platform_device_count=N``, must be set before JAX is imported).
``--baseline_root`` names a checkout of older code (e.g. ``git worktree add /tmp/evalpar_old
76f8896``): its ``resnet_jax/evaluation/protocols.py`` is loaded beside this tree's, on this tree's input
pipeline and model, so only the evaluation code differs, and timed in the same process,
interleaved with it (old code uses one device whatever the count). Per mode and code, a first
pass of ``protocols.evaluate`` over the split compiles (XLA compilations counted through
``jax.monitoring``); then ``--rounds`` passes of each code in turn run compiled code only, their
median is the figure: what each image of a 50,000-image split costs once its shapes (at most
129 for multi-scale) are compiled. With few images the last, padded batch of each multi-scale
shape weighs far more than on the real split.

``compare(...)`` returns the rows and ``table(rows)`` prints them, for other benchmark drivers.
"""

import importlib.util
import io
import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app, flags

MODES = ('ten_crop', 'multi_scale')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPILE_EVENT = '/jax/core/compile/backend_compile_duration'
# ImageNet's most common validation image sizes, landscape and portrait: 10 multi-scale shapes,
# so the buckets fill as they do on the real split, where each shape holds hundreds of images.
SIZES = ((375, 500), (500, 375))


def _load_baseline(root: str):
  """``root``'s resnet_jax/evaluation/protocols.py as a module of its own, on this tree's other modules."""
  spec = importlib.util.spec_from_file_location(
      'baseline_evaluation', os.path.join(root, 'resnet_jax', 'evaluation.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _measure(baseline_root, model_name: str, num_images: int, batch_size: int,
             rounds: int) -> list[dict]:
  """Runs in the worker process: each mode with each code, interleaved."""
  # pylint: disable=import-outside-toplevel  (JAX and TensorFlow load in the worker only)
  import jax
  import jax.numpy as jnp
  import numpy as np
  import tensorflow_datasets as tfds
  from PIL import Image

  from configs import imagenet
  from resnet_jax import config_lib
  from resnet_jax.evaluation import protocols
  from resnet_jax.testing import photos
  from resnet_jax.testing.mock_tfds import jpeg_dataset, prepared_mock

  codes = {'this tree': evaluation}
  if baseline_root:
    codes['baseline'] = _load_baseline(baseline_root)
  images = [np.asarray(Image.open(io.BytesIO(jpeg)).convert('RGB').resize(SIZES[i % 2][::-1]))
            for i, jpeg in enumerate(photos.sample_jpegs(num_images))]
  data_dir = tempfile.mkdtemp()
  config = imagenet.imagenet_config(model_name)
  config.model.dtype = 'float32'
  config.dataset.data_dir = data_dir
  config.eval_batch_size = 10 * batch_size
  model = config_lib.build_model(config, 1000)
  variables = jax.jit(model.init, static_argnames='train')(
      jax.random.key(0), jnp.zeros((1, 224, 224, 3)), train=False)
  compilations = []
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, _, **kw: compilations.append(event) if event == COMPILE_EVENT else None)

  def timed(code, mode):
    start = time.perf_counter()
    result = codes[code].evaluate(config, model, variables, mode, batch_size)
    assert result['num_examples'] == num_images, result
    return time.perf_counter() - start, result

  rows = []
  with prepared_mock('imagenet2012', data_dir, num_images, splits=('train', 'validation')):
    with tfds.testing.mock_data(as_dataset_fn=jpeg_dataset(images, [0] * num_images),
                                data_dir=data_dir):
      for mode in MODES:
        first = {}
        for code in codes:  # The first pass compiles.
          compilations.clear()
          seconds, result = timed(code, mode)
          first[code] = (seconds, len(compilations), result.get('compiled_shapes'))
        seconds = {code: [] for code in codes}
        for _ in range(rounds):
          for code in codes:
            seconds[code].append(timed(code, mode)[0])
        for code in codes:
          rows.append({'code': code, 'devices': jax.local_device_count(), 'mode': mode,
                       'images': num_images, 'first_pass_s': first[code][0],
                       'compiled_s': float(np.median(seconds[code])),
                       'images_per_s': num_images / float(np.median(seconds[code])),
                       'xla_compilations': first[code][1], 'compiled_shapes': first[code][2]})
  return rows


def run_worker(devices: int, baseline_root, model_name: str, num_images: int, batch_size: int,
               rounds: int) -> list[dict]:
  """``_measure`` in a fresh process with ``devices`` simulated CPU devices."""
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  code = ('import json, sys; from experiments import eval_benchmark; print("ROWS", json.dumps('
          'eval_benchmark._measure(sys.argv[1] or None, sys.argv[2], *map(int, sys.argv[3:]))))')
  result = subprocess.run([sys.executable, '-c', code, baseline_root or '', model_name,
                           str(num_images), str(batch_size), str(rounds)], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
  if result.returncode:
    raise RuntimeError(f'The worker on {devices} devices failed:\n{result.stderr[-4000:]}')
  return json.loads(result.stdout.split('ROWS ', 1)[1])


def compare(device_counts=(1, 8), baseline_root=None, model_name='resnet18', num_images=32,
            batch_size=2, rounds=2) -> list[dict]:
  """Rows of images/s per device count, mode and code; speedup over the baseline timed in the
  same process, interleaved with it."""
  rows = []
  for devices in device_counts:
    rows += run_worker(devices, baseline_root and os.path.abspath(baseline_root), model_name,
                       num_images, batch_size, rounds)
  for row in rows:
    base = [b for b in rows if b['code'] == 'baseline' and b['mode'] == row['mode']
            and b['devices'] == row['devices']]
    row['speedup'] = row['images_per_s'] / base[0]['images_per_s'] if base else None
  return rows


def table(rows) -> str:
  """A markdown table of ``compare``'s rows."""
  lines = ['| devices | mode | code | images | first pass s | compiled pass s | images/s '
           '| XLA compilations | compiled shapes | speedup |', '|' + '---|' * 10]
  for r in rows:
    speedup = '-' if r['speedup'] is None else f'{r["speedup"]:.2f}x'
    lines.append(f'| {r["devices"]} | {r["mode"]} | {r["code"]} | {r["images"]} | '
                 f'{r["first_pass_s"]:.1f} | {r["compiled_s"]:.1f} | {r["images_per_s"]:.2f} | '
                 f'{r["xla_compilations"]} | {r["compiled_shapes"] or "-"} | {speedup} |')
  return '\n'.join(lines)


FLAGS = flags.FLAGS


def define_flags():
  """The command line flags (defined on demand, so that other drivers can import this module)."""
  flags.DEFINE_list('devices', ['1', '8'], 'Simulated CPU device counts for this tree.')
  flags.DEFINE_string('baseline_root', None, 'A checkout whose resnet_jax/evaluation/protocols.py is timed '
                      'beside this tree\'s, interleaved.')
  flags.DEFINE_string('model', 'resnet18', 'ImageNet net (configs/imagenet.py names).')
  flags.DEFINE_integer('images', 32, 'Validation images served.')
  flags.DEFINE_integer('rounds', 2, 'Compiled passes per code and mode (the median counts).')
  flags.DEFINE_integer('batch_size', 2, 'Images per 10-crop call (and the multi-scale pixel '
                       'budget: as many pixels per call).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  rows = compare([int(d) for d in FLAGS.devices], FLAGS.baseline_root, FLAGS.model,
                 FLAGS.images, FLAGS.batch_size, FLAGS.rounds)
  print(table(rows))


if __name__ == '__main__':
  define_flags()
  app.run(main)
