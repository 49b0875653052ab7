"""Time to the first ImageNet train batch after a mid-epoch resume, at several positions of an
epoch. The streamed order (``resnet_jax/data/streamed_order.py``) reads only the window that holds
the resumed position, so this time should not grow with the position.

    python -m benchmarks.resume --records=16384 --files=128 --shuffle_buffer=1024 \\
        --positions=0.1,0.5,0.9 --repeats=5

The data is a real TFRecord-prepared imagenet2012 (``resnet_jax/testing/tfrecord_imagenet.py``) of
``--records`` photographs (``resnet_jax/testing/photos.py``: 64 distinct JPEGs, cycled) in
``--files`` files, one data shard, one process. The positions take turns, so all share the
machine's load alike; each figure is the median of ``--repeats`` fresh pipelines: the seconds to
build one (tracing its tf.data functions, no reading), then to its first batch (the reading and
decoding that depend on the position), then the rate of the next ``--steady_batches`` batches,
per second and per CPU second.
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
  flags.DEFINE_integer('repeats', 5, 'Fresh pipelines per position; the median counts.')
  flags.DEFINE_integer('steady_batches', 24, 'Batches timed after the first one.')
  flags.DEFINE_list('positions', ['0.1', '0.5', '0.9'], 'Resume positions, fractions of an epoch.')
  flags.DEFINE_string('data_dir', None, 'Where to write the dataset (default: a temporary dir).')


def _config(data_dir, shuffle_buffer, batch_size):
  from configs import imagenet  # pylint: disable=import-outside-toplevel
  config = imagenet.get_config('resnet50')
  # The train split is all it reads (and the eval split it names); no model is built, so the
  # recipe's BatchNorm groups need not divide a small batch.
  config.dataset.update(data_dir=data_dir, shuffle_buffer=shuffle_buffer, num_shards=1,
                        eval_split='train')
  config.model.bn_group_size = 0
  config.batch_size = batch_size
  return config


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
                   positions=(0.1, 0.5, 0.9), repeats=5, steady_batches=24) -> list[dict]:
  """Rows (part 'resume') of the time to the first batch after resuming at each fraction of an
  epoch; the dataset is written to data_dir first (None: a temporary directory)."""
  if data_dir is None:
    with tempfile.TemporaryDirectory() as tmp:
      return resume_timings(tmp, records, files, shuffle_buffer, batch_size, positions, repeats,
                            steady_batches)
  # pylint: disable=import-outside-toplevel  (TensorFlow loads only when this part runs)
  from resnet_jax.data import datasets
  from resnet_jax.testing import photos, tfrecord_imagenet
  jpegs = photos.sample_jpegs(64)
  train = ([jpegs[i % 64] for i in range(records)], [i % 1000 for i in range(records)])
  tfrecord_imagenet.prepare(data_dir, {'train': train}, files)
  config = _config(data_dir, shuffle_buffer, batch_size)
  steps = datasets.open_config(config).plan.steps_per_epoch
  times = {fraction: [] for fraction in positions}
  for _ in range(repeats):
    for fraction, found in times.items():
      found.append(_time_resume(lambda step=int(fraction * steps): datasets.open_config(
          config).train_batches(start_step=step), steady_batches))
  note = (f'{records} records in {files} TFRecord files, shuffle_buffer {shuffle_buffer}, '
          f'batch {batch_size}, {steps} steps an epoch')
  return [{'part': 'resume', 'position': fraction, 'step': int(fraction * steps),
           'build_s': statistics.median(t[0] for t in found),
           'first_batch_s': statistics.median(t[1] for t in found),
           'total_s': statistics.median(t[0] + t[1] for t in found),
           'first_batch_s_all': [t[1] for t in found],
           'images_per_s_after': statistics.median(t[2] for t in found) * batch_size,
           'images_per_cpu_s_after': statistics.median(t[3] for t in found) * batch_size,
           'note': note} for fraction, found in times.items()]


def table(rows) -> str:
  """``resume_timings``'s rows as text, with the first batch's latest / earliest position."""
  header = (f'{"position":>8s} {"step":>6s} {"build (s)":>10s} {"first batch (s)":>16s} '
            f'{"total (s)":>10s} {"images/s after":>15s} {"per CPU s":>10s}')
  lines = [rows[0]['note'], header]
  for r in rows:
    lines.append(f'{r["position"]:>8.0%} {r["step"]:>6d} {r["build_s"]:>10.2f} '
                 f'{r["first_batch_s"]:>16.2f} {r["total_s"]:>10.2f} '
                 f'{r["images_per_s_after"]:>15.0f} {r["images_per_cpu_s_after"]:>10.0f}')
  earliest, latest = (min(rows, key=lambda r: r['position']),
                      max(rows, key=lambda r: r['position']))
  lines.append(f'first batch at {latest["position"]:.0%} / at {earliest["position"]:.0%}: '
               f'{latest["first_batch_s"] / earliest["first_batch_s"]:.2f}x')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  print(table(resume_timings(FLAGS.data_dir, FLAGS.records, FLAGS.files, FLAGS.shuffle_buffer,
                             FLAGS.batch_size, [float(p) for p in FLAGS.positions],
                             FLAGS.repeats, FLAGS.steady_batches)))


if __name__ == '__main__':
  define_flags()
  app.run(main)
