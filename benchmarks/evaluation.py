"""Throughput of 10-crop and multi-scale testing on a mock ImageNet, on 1 and 8 CPU devices.

    python -m benchmarks.evaluation --devices=1,8 --images=32 --batch_size=2 --rounds=3

Real photographs (``resnet_jax.testing.photos``: scikit-learn's samples), resized to 500x375 and
375x500 (``SIZES``), are served as ``imagenet2012``'s validation split through
``tfds.testing.mock_data`` and the real tfds path; the net is ``--model`` (float32, random
weights). Each device count runs in a process of its own (the simulated device count,
``XLA_FLAGS=--xla_force_host_platform_device_count=N``, must be set before JAX is imported).
Per mode, a first pass of ``protocols.evaluate`` over the split compiles (XLA compilations
counted through ``jax.monitoring``); then ``--rounds`` passes run compiled code only, and their
median is the figure: what each image of a 50,000-image split costs once its shapes (at most
129 for multi-scale) are compiled. With few images the last, padded batch of each multi-scale
shape weighs far more than on the real split.

``timings(...)`` returns the rows and ``table(rows)`` prints them, for the harness.
"""

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


def _measure(model_name: str, num_images: int, batch_size: int, rounds: int) -> list[dict]:
  """Runs in the worker process: each mode, a compiling pass then ``rounds`` compiled ones."""
  # pylint: disable=import-outside-toplevel  (JAX and TensorFlow load in the worker only)
  import jax
  import jax.numpy as jnp
  import numpy as np
  import tensorflow_datasets as tfds
  from PIL import Image

  from configs import imagenet
  from resnet_jax import models
  from resnet_jax.data import datasets
  from resnet_jax.evaluation import protocols
  from resnet_jax.testing import photos
  from resnet_jax.testing.mock_tfds import jpeg_dataset, prepared_mock

  images = [np.asarray(Image.open(io.BytesIO(jpeg)).convert('RGB').resize(SIZES[i % 2][::-1]))
            for i, jpeg in enumerate(photos.sample_jpegs(num_images))]
  data_dir = tempfile.mkdtemp()
  config = imagenet.imagenet_config(model_name)
  config.model.dtype = 'float32'
  config.dataset.data_dir = data_dir
  config.eval_batch_size = 10 * batch_size
  model = models.from_config(config.model, 1000)
  variables = jax.jit(model.init, static_argnames='train')(
      jax.random.key(0), jnp.zeros((1, 224, 224, 3)), train=False)
  compilations = []
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, _, **kw: compilations.append(event) if event == COMPILE_EVENT else None)

  def timed(mode):
    start = time.perf_counter()
    plan = datasets.plan_for(config, processes=jax.process_count(), training=False)
    result = protocols.evaluate(plan, model, variables, mode, batch_size)
    assert result['num_examples'] == num_images, result
    return time.perf_counter() - start, result

  rows = []
  with prepared_mock('imagenet2012', data_dir, num_images, splits=('train', 'validation')):
    with tfds.testing.mock_data(as_dataset_fn=jpeg_dataset(images, [0] * num_images),
                                data_dir=data_dir):
      for mode in MODES:
        compilations.clear()
        first_s, result = timed(mode)  # The first pass compiles.
        compiled_s = float(np.median([timed(mode)[0] for _ in range(rounds)]))
        rows.append({'devices': jax.local_device_count(), 'mode': mode, 'images': num_images,
                     'first_pass_s': first_s, 'compiled_s': compiled_s,
                     'images_per_s': num_images / compiled_s,
                     'xla_compilations': len(compilations),
                     'compiled_shapes': result['compiled_shapes']})
  return rows


def run_worker(devices: int, model_name: str, num_images: int, batch_size: int,
               rounds: int) -> list[dict]:
  """``_measure`` in a fresh process with ``devices`` simulated CPU devices."""
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  code = ('import json, sys; from benchmarks import evaluation; print("ROWS", json.dumps('
          'evaluation._measure(sys.argv[1], *map(int, sys.argv[2:]))))')
  result = subprocess.run([sys.executable, '-c', code, model_name, str(num_images),
                           str(batch_size), str(rounds)], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
  if result.returncode:
    raise RuntimeError(f'The worker on {devices} devices failed:\n{result.stderr[-4000:]}')
  return json.loads(result.stdout.split('ROWS ', 1)[1])


def timings(device_counts=(1, 8), model_name='resnet18', num_images=32, batch_size=2,
            rounds=2) -> list[dict]:
  """Rows of images/s and XLA compilations per device count and mode."""
  return [row for devices in device_counts
          for row in run_worker(devices, model_name, num_images, batch_size, rounds)]


def table(rows) -> str:
  """A markdown table of ``timings``'s rows."""
  header = ('| devices | mode | images | first pass s | compiled pass s | images/s '
            '| XLA compilations | compiled shapes |')
  lines = [header, '|' + '---|' * 8]
  for r in rows:
    lines.append(f'| {r["devices"]} | {r["mode"]} | {r["images"]} | {r["first_pass_s"]:.1f} | '
                 f'{r["compiled_s"]:.1f} | {r["images_per_s"]:.2f} | {r["xla_compilations"]} | '
                 f'{r["compiled_shapes"]} |')
  return '\n'.join(lines)


FLAGS = flags.FLAGS


def define_flags():
  """The command line flags (defined on demand, so that other drivers can import this module)."""
  flags.DEFINE_list('devices', ['1', '8'], 'Simulated CPU device counts, one process each.')
  flags.DEFINE_string('model', 'resnet18', 'ImageNet net (configs/imagenet.py names).')
  flags.DEFINE_integer('images', 32, 'Validation images served.')
  flags.DEFINE_integer('rounds', 2, 'Compiled passes per mode (the median counts).')
  flags.DEFINE_integer('batch_size', 2, 'Images per 10-crop call (and the multi-scale pixel '
                       'budget: as many pixels per call).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  print(table(timings([int(d) for d in FLAGS.devices], FLAGS.model, FLAGS.images,
                      FLAGS.batch_size, FLAGS.rounds)))


if __name__ == '__main__':
  define_flags()
  app.run(main)
