"""The device-resident input path: the whole train split on the accelerators, augmented in JAX.

For the in-memory datasets (digits, CIFAR-10) the preprocessed train split (mean subtracted, as
``small.SmallDataset.train_arrays`` returns it) is copied to every device once. Each jitted call
then runs several training steps (``lax.scan``; unrolled on CPU); every step gathers its batch
on the devices and applies the paper's augmentation there: zero padding, a random crop of the
original size and (CIFAR) a random horizontal flip; then, where ``dataset.random_erasing`` asks
for it, random erasing as the tf.data path draws it (``boxes``: torchvision's RandomErasing),
the box set to 0, the mean. No host work and no host-to-device copy remain in the loop.

Determinism. The batch of global step t (the step that ``state.step == t`` runs) is a pure
function of (seed, t): epoch ``e = t // steps_per_epoch`` reads the split in the order
``jax.random.permutation(fold_in(order_key, e), N)`` and step t takes the ``batch_size``
consecutive positions ``(t % steps_per_epoch) * batch_size, ...`` of it. Crop offsets and flips
are drawn for the whole global batch from ``fold_in(augment_key, t)``, so neither the order nor
the augmentation depends on the number of devices, and a resumed run continues exactly.

TensorFlow is not imported here; the split is loaded once through tfds by
``small.SmallDataset.train_arrays``.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from resnet_jax.parallel import multistep

_DATA_STREAM = 0xDA7A  # Folded into the seed's key, so data keys differ from the model's.
_ERASING = 3  # Folded into a step's augmentation key for random erasing's draws.
ERASING_TRIES = 10  # torchvision's RandomErasing: boxes drawn before giving up.


def put_on_devices(images: np.ndarray, labels: np.ndarray, mesh: jax.sharding.Mesh) -> dict:
  """The whole split replicated on every device of ``mesh`` (every process passes all of it)."""
  replicated = NamedSharding(mesh, P())
  return {'image': jax.make_array_from_process_local_data(replicated, images),
          'label': jax.make_array_from_process_local_data(replicated, labels)}


def crop_and_flip(images, offsets, flips, pad: int):
  """Crops of the ``pad``-zero-padded images at ``offsets`` [B, 2] (y, x), flipped where set."""
  height, width, channels = images.shape[1:]
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  crop = lambda image, offset: jax.lax.dynamic_slice(
      image, (offset[0], offset[1], 0), (height, width, channels))
  images = jax.vmap(crop)(padded, offsets)
  return jnp.where(flips[:, None, None, None], images[:, :, ::-1], images)


def augment(images, key, pad: int, flip: bool):
  """The paper's augmentation: a random crop of the zero-padded image, a random flip if ``flip``."""
  crop_key, flip_key = jax.random.split(key)
  offsets = jax.random.randint(crop_key, (images.shape[0], 2), 0, 2 * pad + 1)
  flips = (jax.random.bernoulli(flip_key, 0.5, (images.shape[0],)) if flip
           else jnp.zeros(images.shape[0], bool))
  return crop_and_flip(images, offsets, flips, pad)


def erasing_boxes(key, count: int, height: int, width: int, scale, ratio):
  """int32 [count, 4] (y, x, h, w) of torchvision's ``RandomErasing(scale, ratio)`` boxes: the
  first of ERASING_TRIES draws (area fraction uniform in ``scale``, aspect ratio log-uniform in
  ``ratio``, h = sqrt(area * aspect)) strictly inside the image; h = w = 0 where none is."""
  u = jax.random.uniform(key, (count, 4, ERASING_TRIES))
  area = height * width * (scale[0] + (scale[1] - scale[0]) * u[:, 0])
  low, high = np.log(ratio[0]), np.log(ratio[1])
  aspect = jnp.exp(low + (high - low) * u[:, 1])
  h = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)
  w = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
  fits = (h < height) & (w < width)
  first = lambda values: jnp.take_along_axis(values, jnp.argmax(fits, 1)[:, None], 1)[:, 0]
  h, w, uy, ux = first(h), first(w), first(u[:, 2]), first(u[:, 3])
  offset = lambda room, v: jnp.minimum((v * (room + 1)).astype(jnp.int32), room)
  boxes = jnp.stack([offset(height - h, uy), offset(width - w, ux), h, w], 1)
  return jnp.where(fits.any(1)[:, None], boxes, 0)


def erase(images, key, probability: float, scale, ratio):
  """``images`` [B, H, W, C] with, each with ``probability``, an ``erasing_boxes`` box set to 0."""
  draw_key, box_key = jax.random.split(key)
  count, height, width = images.shape[:3]
  y, x, h, w = erasing_boxes(box_key, count, height, width, scale, ratio).T
  h = jnp.where(jax.random.uniform(draw_key, (count,)) < probability, h, 0)
  rows, cols = jnp.arange(height), jnp.arange(width)
  inside = (((rows >= y[:, None]) & (rows < (y + h)[:, None]))[:, :, None]
            & ((cols >= x[:, None]) & (cols < (x + w)[:, None]))[:, None, :])
  return jnp.where(inside[..., None], 0.0, images)


def erasing_of(dataset) -> tuple | None:
  """(probability, scale, ratio) of a config's ``dataset.random_erasing`` (with or without the
  paper's augmentation, ``dataset.augment``); None where it is 0."""
  if not dataset.random_erasing:
    return None
  return dataset.random_erasing, tuple(dataset.erasing_scale), tuple(dataset.erasing_ratio)


def data_keys(seed: int):
  """(order_key, augment_key) of a seed."""
  return jax.random.split(jax.random.fold_in(jax.random.key(seed), _DATA_STREAM))


def train_batch(data: dict, step, *, seed: int, batch_size: int, steps_per_epoch: int,
                pad: int, flip: bool, erasing: tuple | None = None) -> dict:
  """The augmented train batch of global step ``step`` (a traced int), as the module describes;
  ``erasing``: random erasing's (probability, scale, ratio), or None."""
  order_key, augment_key = data_keys(seed)
  epoch, position = step // steps_per_epoch, step % steps_per_epoch
  order = jax.random.permutation(jax.random.fold_in(order_key, epoch), data['label'].shape[0])
  index = jax.lax.dynamic_slice_in_dim(order, position * batch_size, batch_size)
  images, labels = data['image'][index], data['label'][index]
  if pad or flip:
    images = augment(images, jax.random.fold_in(augment_key, step), pad, flip)
  if erasing:
    images = erase(images, jax.random.fold_in(jax.random.fold_in(augment_key, step), _ERASING),
                   *erasing)
  return {'image': images, 'label': labels}


def make_train_fn(train_step: Callable, data: dict, mesh: jax.sharding.Mesh, *, seed: int,
                  batch_size: int, steps_per_epoch: int, pad: int, flip: bool,
                  erasing: tuple | None = None) -> Callable:
  """``(state, num_steps) -> (state, metrics)``: ``num_steps`` train steps in one jitted call.

  ``train_step(state, batch) -> (state, metrics)`` is the usual step; ``data`` is what
  ``put_on_devices`` returns. The state is donated; metrics are merged over the call's steps.
  """
  replicated = NamedSharding(mesh, P())
  batch_fn = functools.partial(train_batch, seed=seed, batch_size=batch_size,
                               steps_per_epoch=steps_per_epoch, pad=pad, flip=flip,
                               erasing=erasing)

  def run(state, data, num_steps):
    # The global batch; the step splits it along 'data' (data parallel: each device its slice).
    step_fn = lambda state, _: train_step(state, batch_fn(data, state.step))
    return multistep.run_steps(step_fn, state, [None] * num_steps, unroll=multistep.unrolls(mesh))

  jitted = jax.jit(run, static_argnums=2, donate_argnums=0,
                   in_shardings=(replicated, replicated), out_shardings=(replicated, replicated))
  return lambda state, num_steps: jitted(state, data, int(num_steps))
