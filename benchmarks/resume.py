"""Time to the first ImageNet train batch after a mid-epoch resume: this pipeline's window order
(``resnet_jax/data/streamed_order.py``) beside the order it replaced, side by side in one run.

    python -m benchmarks.resume --records=16384 --files=128 --shuffle_buffer=1024

The data is a real TFRecord-prepared imagenet2012 (``resnet_jax/testing/tfrecord_imagenet.py``) of
``--records`` photographs (``resnet_jax/testing/photos.py``: 64 distinct JPEGs of ~58 KB, cycled) in
``--files`` files, one data shard, one process. The previous order streamed the files in stored
order every epoch through a seeded ``--shuffle_buffer``-record buffer, so a resume had to re-read
(without decoding) the epoch's used records; it is rebuilt here, for this comparison only.
Timers take turns (repeat, position, order), so both share the machine's load alike; each
figure is the median of ``--repeats`` fresh pipelines: the seconds to build one (tracing its
tf.data functions, no reading), then to its first batch (the reading and decoding that depend on
the position), then the rate of the next ``--steady_batches`` batches (more than a window, so
both orders pay their reading), per second and per CPU second.
"""

import statistics
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags():
  """The command line flags (defined on demand, so that other drivers can import this module)."""
  flags.DEFINE_integer('records', 16384, 'Train records of the prepared dataset.')
  flags.DEFINE_integer('files', 128, 'TFRecord files they are written to.')
  flags.DEFINE_integer('shuffle_buffer', 1024, 'config.dataset.shuffle_buffer (the window).')
  flags.DEFINE_integer('batch_size', 64, 'Train batch size.')
  flags.DEFINE_integer('repeats', 5, 'Fresh pipelines per (order, position); the median counts.')
  flags.DEFINE_integer('steady_batches', 24, 'Batches timed after the first one.')
  flags.DEFINE_list('positions', ['0.1', '0.9'], 'Resume positions, fractions of an epoch.')
  flags.DEFINE_string('data_dir', None, 'Where to write the dataset (default: a temporary dir).')

WINDOWS = 'windows (this pipeline)'
PREVIOUS = 'stored order + shuffle buffer (previous)'


def _config(data_dir, shuffle_buffer, batch_size):
  from configs import imagenet  # pylint: disable=import-outside-toplevel
  config = imagenet.get_config('resnet50')
  config.dataset.update(data_dir=data_dir, shuffle_buffer=shuffle_buffer, num_shards=1)
  config.batch_size = batch_size
  return config


def previous_order_batches(config, start_step):
  """Train batches as the previous streamed order gave them (one shard, one process)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  from resnet_jax.data import imagenet as imagenet_preprocessing  # pylint: disable=import-outside-toplevel
  from resnet_jax.data import pipeline as input_pipeline
  from resnet_jax.data.streamed_order import fold  # pylint: disable=import-outside-toplevel
  builder = tfds.builder('imagenet2012', data_dir=config.dataset.data_dir)
  steps = input_pipeline.steps_per_epoch(config, process_count=1)
  per_epoch = steps * config.batch_size
  start_epoch, start_position = divmod(start_step, steps)
  key = fold(tf.constant([config.seed, 0], tf.int64), 0)
  records = builder.as_dataset(split=config.dataset.train_split, shuffle_files=False,
                               as_supervised=True, decoders={'image': tfds.decode.SkipDecoding()})

  def epoch(e):
    epoch_key = fold(key, e)
    seed = tf.random.stateless_uniform([], epoch_key, minval=None, maxval=None, dtype=tf.int64)
    ds = records.shuffle(config.dataset.shuffle_buffer, seed=seed).take(per_epoch).enumerate()
    ds = ds.skip(tf.where(e == start_epoch, tf.constant(start_position * config.batch_size,
                                                        tf.int64), 0))
    return ds.map(lambda position, record: (fold(epoch_key, position), record))

  def example(example_key, record):
    image, offset = imagenet_preprocessing.train_example(record[0], example_key,
                                                         config.dataset.image_size)
    return {'image': image, 'image_offset': offset, 'label': tf.cast(record[1], tf.int32)}

  ds = tf.data.Dataset.counter(start_epoch).flat_map(epoch)
  ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.batch(config.batch_size, drop_remainder=True).prefetch(
      tf.data.AUTOTUNE).as_numpy_iterator()


def _time_resume(make_batches, steady_batches):
  """Seconds to build the pipeline, then to its first batch; batches per second and per CPU
  second (this process, all its threads) of the next ones."""
  start = time.perf_counter()
  batches = make_batches()
  built = time.perf_counter()
  next(batches)
  first, cpu = time.perf_counter(), time.process_time()
  for _ in range(steady_batches):
    next(batches)
  return (built - start, first - built, steady_batches / (time.perf_counter() - first),
          steady_batches / (time.process_time() - cpu))


def resume_timings(data_dir=None, records=16384, files=128, shuffle_buffer=1024, batch_size=64,
                   positions=(0.1, 0.9), repeats=5, steady_batches=24) -> list[dict]:
  """Rows (part 'resume') of the time to the first batch after resuming at each fraction of an
  epoch, window order beside the previous one; the dataset is written to data_dir first (None:
  a temporary directory)."""
  if data_dir is None:
    with tempfile.TemporaryDirectory() as tmp:
      return resume_timings(tmp, records, files, shuffle_buffer, batch_size, positions, repeats,
                            steady_batches)
  from resnet_jax.data import pipeline as input_pipeline  # pylint: disable=import-outside-toplevel
  from resnet_jax.testing import (
    photos,  # pylint: disable=import-outside-toplevel
    tfrecord_imagenet,
  )
  jpegs = photos.sample_jpegs(64)
  train = ([jpegs[i % 64] for i in range(records)], [i % 1000 for i in range(records)])
  tfrecord_imagenet.prepare(data_dir, {'train': train}, files)
  config = _config(data_dir, shuffle_buffer, batch_size)
  steps = input_pipeline.steps_per_epoch(config, process_count=1)
  makers = {
      WINDOWS: lambda step: input_pipeline.train_batches(config, start_step=step, process_index=0,
                                                         process_count=1),
      PREVIOUS: lambda step: previous_order_batches(config, step)}
  times = {}
  for _ in range(repeats):
    for fraction in positions:
      for name, make in makers.items():
        step = int(fraction * steps)
        times.setdefault((name, fraction), []).append(
            _time_resume(lambda make=make, step=step: make(step), steady_batches))
  note = (f'{records} records in {files} TFRecord files, shuffle_buffer {shuffle_buffer}, '
          f'batch {batch_size}, {steps} steps an epoch')
  return [{'part': 'resume', 'impl': name, 'position': fraction, 'step': int(fraction * steps),
           'build_s': statistics.median(t[0] for t in found),
           'first_batch_s': statistics.median(t[1] for t in found),
           'total_s': statistics.median(t[0] + t[1] for t in found),
           'first_batch_s_all': [t[1] for t in found],
           'images_per_s_after': statistics.median(t[2] for t in found) * batch_size,
           'images_per_cpu_s_after': statistics.median(t[3] for t in found) * batch_size,
           'note': note} for (name, fraction), found in times.items()]


def print_rows(rows):
  print(rows[0]['note'])
  print(f'{"order":42s} {"position":>8s} {"build (s)":>10s} {"first batch (s)":>16s} '
        f'{"total (s)":>10s} {"images/s after":>15s} {"per CPU s":>10s}')
  for r in rows:
    print(f'{r["impl"]:42s} {r["position"]:>8.0%} {r["build_s"]:>10.2f} '
          f'{r["first_batch_s"]:>16.2f} {r["total_s"]:>10.2f} {r["images_per_s_after"]:>15.0f} '
          f'{r["images_per_cpu_s_after"]:>10.0f}')
  by = {(r['impl'], r['position']): r for r in rows}
  for position in sorted({r['position'] for r in rows}):
    previous, windows = by[(PREVIOUS, position)], by[(WINDOWS, position)]
    print(f'at {position:.0%}, previous / windows: first batch after the build '
          f'{previous["first_batch_s"] / windows["first_batch_s"]:.1f}x, total '
          f'{previous["total_s"] / windows["total_s"]:.1f}x')


def main(argv):
  del argv
  print_rows(resume_timings(FLAGS.data_dir, FLAGS.records, FLAGS.files, FLAGS.shuffle_buffer,
                            FLAGS.batch_size, [float(p) for p in FLAGS.positions], FLAGS.repeats,
                            FLAGS.steady_batches))


if __name__ == '__main__':
  define_flags()
  app.run(main)
