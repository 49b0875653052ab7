"""ImageNet preprocessing on real photographs: the project's tf.data maps beside PIL + torchvision.

    python -m benchmarks.harness --parts=input --input_threads=1,2 --steps=3 --repeats=5 \
        --input_kinds=train,eval,train_v2

Both sides read the same JPEG files (``resnet_jax/testing/photos.py``) from memory and return uint8
images (224x224; 176x176 for train_v2), so what is timed is decoding and augmentation alone.
The kinds (``--input_kinds``):

* train: project ``train_example`` (the paper's recipe) of ``resnet_jax/data/imagenet.py``;
  reference ``RandomResizedCrop(224)`` + flip + ``PILToTensor``;
* eval: project ``eval_example``; reference ``Resize(256)`` + ``CenterCrop(224)`` +
  ``PILToTensor``;
* train_v2, torchvision's "new recipe" augmentation: project ``train_example`` with the
  random-resized crop at 176, TrivialAugmentWide and random erasing (p = 0.1), no PCA lighting
  (``v2_recipe``); reference transforms v2 ``RandomResizedCrop(176)`` + flip +
  ``TrivialAugmentWide`` + ``PILToTensor`` + ``RandomErasing(0.1)``
  (``torch_input.train_v2_transform``).

The project's map runs over the files in tf.data with N threads (a private thread pool of N,
``num_parallel_calls=N``, one thread inside each op), batched; the reference decodes with PIL
and transforms in N worker processes (forked, as PyTorch's DataLoader does on Linux) that share
each batch.

``train_pipeline_rows`` times the digits and cifar10 train pipelines
(``Dataset.train_batches``, with their own prefetching) alone, one after the other.

In the ImageNet timers nothing runs between calls (no background prefetch), so they share the
machine fairly. Besides wall time, each timer counts the CPU seconds of what does its work (this
process for tf.data, which also counts its idle threads' spinning; the workers for torch):
images per CPU second is the per-core rate with less of other processes' load in it.
"""

import functools
import io
import itertools
import multiprocessing
import os
import time
from collections.abc import Iterator

import numpy as np

from benchmarks import torch_input
from benchmarks.settings import Settings, dataset
from benchmarks.timing import Timer, row, time_steps
from configs import cifar10, digits

IMAGE_SIZE = 224
V2_IMAGE_SIZE = 176  # torchvision's "new recipe" trains at 176.
V2_ERASING = 0.1
NUM_PHOTOS = 64
KINDS = ('train', 'eval', 'train_v2')


def v2_recipe():
  """The project's fields for torchvision's "new recipe" augmentation (``augmentation``)."""
  from resnet_jax.data import augmentation  # pylint: disable=import-outside-toplevel
  return augmentation.Augmentation(crop_scale=(0.08, 1.0), lighting=False,
                                   policy='trivial_augment_wide', erasing=V2_ERASING)


def project_batches(jpegs, kind: str, threads: int, batch_size: int) -> Iterator:
  """Endless batches of the project's ImageNet map of ``kind`` (KINDS) over ``jpegs``."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  from resnet_jax.data import imagenet as imagenet_preprocessing  # pylint: disable=import-outside-toplevel
  recipe = v2_recipe()

  def example(index, image_bytes):
    key = tf.stack([index, tf.constant(0, tf.int64)])
    if kind == 'train':
      return imagenet_preprocessing.train_example(image_bytes, key, IMAGE_SIZE)
    if kind == 'train_v2':
      return imagenet_preprocessing.train_example(image_bytes, key, V2_IMAGE_SIZE, recipe)
    return imagenet_preprocessing.eval_example(image_bytes, IMAGE_SIZE)

  ds = tf.data.Dataset.from_tensor_slices(jpegs).repeat().enumerate()
  ds = ds.map(example, num_parallel_calls=threads, deterministic=True).batch(batch_size)
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  options.threading.max_intra_op_parallelism = 1
  options.autotune.enabled = False  # No background prefetching between the timed calls,
  options.experimental_optimization.apply_default_optimizations = False  # nor batches ahead.
  return iter(ds.with_options(options))


_WORKER_STATE = None  # In each reference worker process: (JPEG files, {kind: transform}).


def _init_worker(jpegs):
  global _WORKER_STATE  # pylint: disable=global-statement
  _WORKER_STATE = (jpegs, {'train': torch_input.train_transform(IMAGE_SIZE),
                           'eval': torch_input.eval_transform(IMAGE_SIZE),
                           'train_v2': torch_input.train_v2_transform(V2_IMAGE_SIZE, V2_ERASING)})


def _torch_example(index, kind):
  """PIL decode and the torchvision transform of one file, in a worker: uint8 [3, S, S]."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  jpegs, transforms = _WORKER_STATE
  image = Image.open(io.BytesIO(jpegs[index % len(jpegs)])).convert('RGB')
  return transforms[kind](image).numpy()


def _process_cpu_s(pid) -> float:
  """User + system CPU seconds of a process so far (Linux /proc)."""
  with open(f'/proc/{pid}/stat') as f:
    fields = f.read().rsplit(')', 1)[1].split()
  return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def torch_timer_fns(jpegs, kind: str, cores: int, batch_size: int):
  """(call returning one reference batch, its CPU seconds so far): ``cores`` worker processes
  share each batch, and only their CPU time counts (not this process's, which runs tf.data)."""
  pool = multiprocessing.get_context('fork').Pool(cores, _init_worker, (jpegs,))
  pids = [worker.pid for worker in pool._pool]  # pylint: disable=protected-access
  example = functools.partial(_torch_example, kind=kind)
  counter = iter(range(1 << 62))
  run = lambda: np.stack(pool.map(example, [next(counter) for _ in range(batch_size)],
                                  chunksize=-(-batch_size // cores)))
  return run, lambda: sum(_process_cpu_s(pid) for pid in pids)


def timers(threads: list[int], batch_size: int, kinds=('train', 'eval')) -> list[Timer]:
  """Timers of the project and the reference, per kind (KINDS) and thread count (part
  'input')."""
  from resnet_jax.testing import photos  # pylint: disable=import-outside-toplevel  (PIL, scikit-learn)
  jpegs = photos.sample_jpegs(NUM_PHOTOS)
  note = (f'imagenet, {NUM_PHOTOS} photos from sklearn, '
          f'{np.mean([len(j) for j in jpegs]) / 1e3:.0f} KB average')
  result = []
  for n, kind in itertools.product(threads, kinds):
    batches = project_batches(jpegs, kind, n, batch_size)
    torch_run, torch_cpu_s = torch_timer_fns(jpegs, kind, n, batch_size)
    result += [
        Timer('input', _impl('tf.data', kind, n), lambda batches=batches: next(batches),
              lambda: None, batch_size, note=note, cpu_s=time.process_time),
        Timer('input', _impl('torchvision', kind, n), torch_run, lambda: None, batch_size,
              note=note, cpu_s=torch_cpu_s)]
  return result


def train_pipeline_rows(settings: Settings) -> list[dict]:
  """Images/s of the digits and cifar10 train pipelines (tf.data, this process's batches)."""
  from resnet_jax.data import datasets  # pylint: disable=import-outside-toplevel
  results = []
  for config, num_examples in ((digits.get_config(), 0), (cifar10.get_config(), 2048)):
    with dataset(config, num_examples, settings.data_dir) as note:
      batches = datasets.open_config(config).train_batches(start_step=0)
      timing = time_steps(lambda: next(batches), lambda: None, repeats=settings.repeats,
                          steps=settings.steps)
    results.append(row('input', config.dataset.name, timing, config.batch_size,
                       note=f'batch {config.batch_size}; {note}'))
  return results


def _impl(who, kind, threads):
  return f'{who} {kind}, {threads} thread{"s" * (threads > 1)}'


def ratios(results, key: str = 'images_per_s') -> dict:
  """tf.data / torchvision at equal threads, 2 threads / 1, cores per 1,000 images/s."""
  rates = {r['impl']: r[key] for r in results if r['part'] == 'input' and key in r}
  found = {}
  for kind in KINDS:
    for threads in (1, 2):
      ours, theirs = rates.get(_impl('tf.data', kind, threads)), rates.get(
          _impl('torchvision', kind, threads))
      if ours and theirs:
        found[f'imagenet {kind}, {threads} thread(s): tf.data / torchvision'] = ours / theirs
    for who in ('tf.data', 'torchvision'):
      one, two = rates.get(_impl(who, kind, 1)), rates.get(_impl(who, kind, 2))
      if one and two:
        found[f'imagenet {kind}, {who}: 2 threads / 1 thread'] = two / one
      if one:
        found[f'imagenet {kind}, {who}: cores per 1,000 images/s'] = 1000 / one
  return found
