"""The device-resident input path: the whole train split on the accelerators, augmented in JAX.

For the in-memory datasets (digits, CIFAR-10) the preprocessed train split (mean subtracted, as
``small.SmallDataset.train_arrays`` returns it) is copied to every device once. Each jitted call
then runs several training steps (``lax.scan``; unrolled on CPU); every step gathers its batch
on the devices and applies the paper's augmentation there: zero padding, a random crop of the
original size and (CIFAR) a random horizontal flip. No host work and no host-to-device copy
remain in the loop.

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


def data_keys(seed: int):
  """(order_key, augment_key) of a seed."""
  return jax.random.split(jax.random.fold_in(jax.random.key(seed), _DATA_STREAM))


def train_batch(data: dict, step, *, seed: int, batch_size: int, steps_per_epoch: int,
                pad: int, flip: bool) -> dict:
  """The augmented train batch of global step ``step`` (a traced int), as the module describes."""
  order_key, augment_key = data_keys(seed)
  epoch, position = step // steps_per_epoch, step % steps_per_epoch
  order = jax.random.permutation(jax.random.fold_in(order_key, epoch), data['label'].shape[0])
  index = jax.lax.dynamic_slice_in_dim(order, position * batch_size, batch_size)
  images, labels = data['image'][index], data['label'][index]
  if pad or flip:
    images = augment(images, jax.random.fold_in(augment_key, step), pad, flip)
  return {'image': images, 'label': labels}


def make_train_fn(train_step: Callable, data: dict, mesh: jax.sharding.Mesh, *, seed: int,
                  batch_size: int, steps_per_epoch: int, pad: int, flip: bool) -> Callable:
  """``(state, num_steps) -> (state, metrics)``: ``num_steps`` train steps in one jitted call.

  ``train_step(state, batch) -> (state, metrics)`` is the usual step; ``data`` is what
  ``put_on_devices`` returns. The state is donated; metrics are merged over the call's steps.
  """
  replicated = NamedSharding(mesh, P())
  batch_fn = functools.partial(train_batch, seed=seed, batch_size=batch_size,
                               steps_per_epoch=steps_per_epoch, pad=pad, flip=flip)

  def run(state, data, num_steps):
    # The global batch; the step splits it along 'data' (data parallel: each device its slice).
    step_fn = lambda state, _: train_step(state, batch_fn(data, state.step))
    return multistep.run_steps(step_fn, state, [None] * num_steps, unroll=multistep.unrolls(mesh))

  jitted = jax.jit(run, static_argnums=2, donate_argnums=0,
                   in_shardings=(replicated, replicated), out_shardings=(replicated, replicated))
  return lambda state, num_steps: jitted(state, data, int(num_steps))
