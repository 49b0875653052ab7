"""Evaluation modes of a trained model: centre crop, the paper's 10-crop and multi-scale testing.

* ``center``: the training pipeline's evaluation view (ImageNet: the centre 224 crop at shorter
  side 256; CIFAR and digits: the original image).
* ``ten_crop``: the 4 corner and the centre 224 crops of the image resized to shorter side 256,
  and their horizontal flips (ImageNet; paper Sec. 3.4).
* ``multi_scale``: the fully convolutional net (global average pooling) applied to the whole
  image at shorter side 224, 256, 384, 480 and 640 (ImageNet; paper Sec. 3.4), batched by view
  shape: at most ``eval_views.max_view_shapes()`` shapes (129), each compiled once;
  ``eval_views`` says how an image maps to its shape and what that costs.

Scores are softmax probabilities averaged over the views; their top-k errors are counted with
training's rule, ``steps.top_k_errors`` (ties as a random order would, on average; a non-finite
score, an error). Every example of the split counts exactly once: partial batches are padded to
their fixed size and masked, never dropped.
``evaluate`` reports ``compiled_shapes``, the distinct input shapes it ran (one compilation
each in a fresh process).

Devices and hosts. Each process evaluates its own part of the split
(``tfds.even_splits(split, process_count)[process_index]``, as training's evaluation does) in
batches split over a mesh of its own devices, and the error counts of all processes are summed
once at the end (``multihost_utils.process_allgather``). A computation whose arrays live on one
process's devices involves no other process, so the processes need not agree on the number of
calls or on their shapes: each makes as many calls as its part needs, with the shapes its
multi-scale buckets hold, and no host waits for another before the final sum. A mesh over every
host's devices would make all processes run the same sequence of calls and shapes, which
bucketing by the images' shapes cannot promise.
"""

import dataclasses
import functools
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
from jax.experimental import multihost_utils

from resnet_jax import notebook, run_plan, steps
from resnet_jax.data import datasets
from resnet_jax.evaluation import MODES
from resnet_jax.evaluation import views as eval_views
from resnet_jax.parallel import sharding

MODEL_INPUTS = ('views', 'image', 'image_offset')  # What the model reads of a batch.
OUTPUT_CHUNK = 1024  # Examples per multi-scale result chunk.


def mean_probabilities(model, variables, batch, image_correction=None):
  """Softmax probabilities averaged over views -> [B, num_classes].

  ``batch``: {'views': [B, V, H, W, C]}, or a batch of the training pipeline's eval view (with
  ``image_correction`` as in ``steps.model_images``).
  """
  views = (batch['views'] if 'views' in batch
           else steps.model_images(batch, image_correction)[:, None])
  size, num_views = views.shape[:2]
  logits = model.apply(variables, views.reshape((size * num_views,) + views.shape[2:]),
                       train=False)
  return jax.nn.softmax(logits.astype(jnp.float32)).reshape(size, num_views, -1).mean(1)


@functools.partial(jax.jit, static_argnums=0)
def _jitted_probabilities(model, variables, batch, image_correction):
  """``mean_probabilities``, compiled once per model and input shape for every ``evaluate``."""
  return mean_probabilities(model, variables, batch, image_correction)


class _Forward:
  """``mean_probabilities`` on this process's devices, the variables and the per-pixel mean
  correction (the data's ``mean_correction``) replicated there once; records the input shapes
  it runs."""

  def __init__(self, data, model, variables):
    mesh = sharding.local_mesh()
    self.num_devices = mesh.size
    replicated = sharding.replicated(mesh)
    correction = data.mean_correction()
    self.probabilities = functools.partial(
        _jitted_probabilities, model,
        image_correction=None if correction is None else jax.device_put(correction, replicated))
    self.variables = jax.device_put(variables, replicated)
    self.sharding = sharding.batch_sharding(mesh)
    self.shapes = set()

  def scores(self, batches: Iterator[dict]) -> Iterator[tuple[np.ndarray, dict]]:
    """(probabilities, the batch's other arrays) per batch (numpy, a multiple of the devices);
    the next batch is on its way to the devices and computing while the host reads one."""
    pending = None
    for batch in sharding.prefetch_to_devices(batches, self.sharding):
      inputs = {k: v for k, v in batch.items() if k in MODEL_INPUTS}
      self.shapes.add(tuple(sorted((k, v.shape, v.dtype.name) for k, v in inputs.items())))
      current = (self.probabilities(self.variables, inputs),
                 {k: v for k, v in batch.items() if k not in MODEL_INPUTS})
      if pending is not None:
        yield jax.tree.map(np.asarray, pending)
      pending = current
    if pending is not None:
      yield jax.tree.map(np.asarray, pending)


def _padded(batches: Iterator[dict], size) -> Iterator[dict]:
  """Batches padded to ``size`` (or ``size(batch)``) examples; 'mask' marks the real ones."""
  for batch in batches:
    padded, mask = sharding.pad_batch(batch, size if isinstance(size, int) else size(batch))
    yield {'mask': mask, **padded}  # A batch's own mask, padded with False, comes first.


def _center(data, forward, batch_size):
  del batch_size  # config.eval_batch_size, as in training.
  size = sharding.round_up(data.plan.eval_process_batch, forward.num_devices)
  for probabilities, rest in forward.scores(_padded(data.eval_split(data.plan.eval_sets[0]),
                                                    size)):
    yield probabilities, rest['label'], rest['mask']


def _ten_crop(data, forward, batch_size):
  crop, shorter_side = data.eval_view
  views = eval_views.ten_crop_views(data.eval_jpeg_records()[0], crop, shorter_side,
                                    data.mean_correction())
  batches = views.batch(batch_size).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
  for probabilities, rest in forward.scores(_padded(batches, batch_size)):
    yield probabilities, rest['label'], rest['mask']


def _multi_scale(data, forward, batch_size):
  """Scores summed per example as the buckets fill, in any order; yielded in order at the end."""
  records, count = data.eval_jpeg_records()
  pixels = batch_size * 10 * data.eval_view[0] ** 2  # A 10-crop call's input.
  batches = eval_views.multi_scale_views(
      records, pixels, forward.num_devices, data.mean_correction()
  ).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
  bucket_size = lambda batch: int(eval_views.bucket_batch_size(
      *batch['views'].shape[2:4], pixels, forward.num_devices))
  sums, labels, seen = None, np.zeros(count, np.int32), np.zeros(count, np.int32)
  for probabilities, rest in forward.scores(_padded(batches, bucket_size)):
    index = rest['index'][rest['mask']]
    if sums is None:
      sums = np.zeros((count, probabilities.shape[1]), np.float32)
    sums[index] += probabilities[rest['mask']]
    labels[index] = rest['label'][rest['mask']]
    seen[index] += 1
  if np.any(seen != len(eval_views.SCALES)):
    raise RuntimeError(f'Multi-scale testing scored {sorted(set(seen.tolist()))} views per '
                       f'image, not {len(eval_views.SCALES)}.')
  for start in range(0, count, OUTPUT_CHUNK):
    chunk = slice(start, start + OUTPUT_CHUNK)
    yield (sums[chunk] / len(eval_views.SCALES), labels[chunk],
           np.ones(len(labels[chunk]), bool))


PREDICTORS = {'center': _center, 'ten_crop': _ten_crop, 'multi_scale': _multi_scale}


def check_mode(plan: run_plan.RunPlan, mode: str) -> None:
  """Stops on a mode the plan's dataset does not support, before any work."""
  if mode not in MODES:
    raise ValueError(f'Unknown evaluation mode {mode!r}; use one of {", ".join(MODES)}.')
  spec = plan.dataset
  if spec.label_sets:
    raise ValueError(f'The evaluation modes score one class per image; {spec.name} labels each '
                     "image with a set of classes, which the training loop's evaluation scores "
                     '(steps.eval_step): evaluate it beside a training run.')
  if mode != 'center' and not spec.has_views:
    raise ValueError(f'Mode {mode!r} crops and rescales full-size images; evaluate '
                     f"{spec.name} with 'center', its single original view, as the paper does "
                     'for CIFAR-10.')


def open_for_every_process(plan: run_plan.RunPlan):
  """``plan``'s data as this process reads its part, every process of the job evaluating."""
  plan = dataclasses.replace(plan, processes=jax.process_count(), devices=jax.device_count())
  return datasets.open_dataset(plan, jax.process_index())


def _predictions(data, forward, mode, batch_size):
  images = batch_size or max(data.plan.config.eval_batch_size // (10 * data.plan.processes), 1)
  yield from PREDICTORS[mode](data, forward, sharding.round_up(images, forward.num_devices))


def predictions(plan: run_plan.RunPlan, model, variables, mode: str,
                batch_size: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """(averaged probabilities [B, K], labels [B], mask [B]) over this process's part of the eval
  split of ``plan``, in order (the whole split in a single process).

  ``batch_size``: images per call on this process for ``ten_crop`` (0: config.eval_batch_size
  // 10, shared by the processes), rounded up to a multiple of its devices; ``multi_scale``
  puts as many pixels in a call (at least one image per device).
  """
  check_mode(plan, mode)
  data = open_for_every_process(plan)
  yield from _predictions(data, _Forward(data, model, variables), mode, batch_size)


def evaluate(plan: run_plan.RunPlan, model, variables, mode: str, batch_size: int = 0) -> dict:
  """{'error_top1', 'error_top5', 'num_examples', 'compiled_shapes'} of ``mode`` over the whole
  eval split of ``plan``, every process's part together (call it in every process)."""
  check_mode(plan, mode)
  data = open_for_every_process(plan)
  forward = _Forward(data, model, variables)
  totals = np.zeros(3)  # Top-1 errors, top-5 errors, examples.
  for probabilities, labels, mask in _predictions(data, forward, mode, batch_size):
    # Training's rule on numpy arrays: computed on the host, compiling nothing beside the model.
    errors = steps.top_k_errors(probabilities, labels, (1, 5))
    totals += [*errors[mask].sum(0, dtype=np.float64), np.sum(mask)]
  compiled = len(forward.shapes)
  if jax.process_count() > 1:
    gathered = np.asarray(multihost_utils.process_allgather(
        np.array([*totals, compiled], np.float32)))
    totals, compiled = gathered[:, :3].sum(0, dtype=np.float64), gathered[:, 3].max()
  errors_top1, errors_top5, count = float(totals[0]), float(totals[1]), int(totals[2])
  return {'error_top1': errors_top1 / count, 'error_top5': errors_top5 / count,
          'num_examples': count, 'compiled_shapes': int(compiled)}


def evaluate_workdir(workdir: str, mode: str, step=None, data_dir=None,
                     batch_size: int = 0, weights: str = 'raw') -> dict:
  """``evaluate`` for a run's checkpoint (default: the latest) with its ``weights`` ('raw' or
  'ema', ``notebook.load_run``); adds 'mode', 'step' and 'weights'."""
  run = notebook.load_run(workdir, step, data_dir=data_dir, weights=weights)
  return dict(evaluate(run.plan, run.model, run.variables, mode, batch_size), mode=mode,
              step=run.step, weights=weights)
