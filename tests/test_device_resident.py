"""The device-resident input path: augmentation geometry, data order, devices, config checks.

Training runs through it are in test_multistep.py."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import digits
from resnet_jax.data import device_resident as device_data
from resnet_jax.errors import ConfigError
from tests.harness import plan_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_crop_and_flip_by_hand():
  image = np.array([[1., 2.], [3., 4.]])[None, :, :, None]  # Zero-padded by 1: a 4x4 frame.
  images = jnp.asarray(np.repeat(image, 3, axis=0))
  out = device_data.crop_and_flip(images, jnp.array([[0, 0], [2, 2], [1, 1]]),
                                  jnp.array([False, False, True]), pad=1)
  np.testing.assert_array_equal(out[..., 0], [[[0, 0], [0, 1]],   # Top-left of the frame.
                                              [[4, 0], [0, 0]],   # Bottom-right.
                                              [[2, 1], [4, 3]]])  # Centre = image, flipped.


def find_crop(padded, crop, pad, flip):
  """(dy, dx, flipped) of the crop of ``padded`` equal to ``crop``, or None."""
  size = crop.shape[0]
  for dy in range(2 * pad + 1):
    for dx in range(2 * pad + 1):
      window = padded[dy:dy + size, dx:dx + size]
      for flipped in ((False, True) if flip else (False,)):
        if np.array_equal(window[:, ::-1] if flipped else window, crop):
          return dy, dx, flipped
  return None


@pytest.mark.parametrize('pad, flip', [(4, True), (2, False)])  # CIFAR-10 and digits.
def test_augment_gives_padded_crops_and_flips(pad, flip):
  images = np.random.default_rng(0).standard_normal((300, 8, 8, 3)).astype(np.float32)
  out = np.asarray(device_data.augment(jnp.asarray(images), jax.random.key(1), pad, flip))
  padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  found = [find_crop(p, o, pad, flip) for p, o in zip(padded, out)]
  assert None not in found
  offsets = {(dy, dx) for dy, dx, _ in found}
  assert len(offsets) > 0.8 * (2 * pad + 1) ** 2  # Offsets spread over the whole range.
  flipped = np.mean([f for _, _, f in found])
  assert 0.4 < flipped < 0.6 if flip else flipped == 0


def batches(data, seed, steps, batch_size=8, steps_per_epoch=5):
  fn = jax.jit(lambda d, t: device_data.train_batch(
      d, t, seed=seed, batch_size=batch_size, steps_per_epoch=steps_per_epoch, pad=1, flip=True))
  return [jax.tree.map(np.asarray, fn(data, t)) for t in steps]


def test_each_epoch_is_a_new_permutation_and_a_function_of_seed_and_step():
  data = {'image': jnp.zeros((40, 4, 4, 1)), 'label': jnp.arange(40)}  # Label = example index.
  epochs = [np.concatenate([b['label'] for b in batches(data, 0, range(e * 5, e * 5 + 5))])
            for e in (0, 1)]
  for order in epochs:
    assert sorted(order.tolist()) == list(range(40))
  assert epochs[0].tolist() != epochs[1].tolist()
  again = batches(data, 0, [7, 3])  # Any step, in any order, gives the same batch.
  np.testing.assert_array_equal(again[0]['label'], epochs[1][16:24])
  np.testing.assert_array_equal(again[1]['label'], epochs[0][24:32])
  assert batches(data, 1, [0])[0]['label'].tolist() != epochs[0][:8].tolist()


SHARDED_BATCHES = textwrap.dedent('''
    import sys
    import jax, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from resnet_jax.data import device_resident as device_data
    assert jax.device_count() == 8
    mesh = jax.make_mesh((8,), ('data',))
    rng = np.random.default_rng(0)
    data = device_data.put_on_devices(rng.standard_normal((64, 6, 6, 3), np.float32),
                                      np.arange(64, dtype=np.int32), mesh)
    fn = jax.jit(lambda d, t: device_data.train_batch(
        d, t, seed=3, batch_size=16, steps_per_epoch=4, pad=4, flip=True),
        out_shardings=NamedSharding(mesh, P('data')))
    out = [fn(data, t) for t in (0, 5, 9)]
    assert len(out[0]['image'].sharding.device_set) == 8
    np.savez(sys.argv[1], *[np.asarray(b[k]) for b in out for k in ('image', 'label')])
''')


@pytest.mark.e2e
def test_same_batches_on_one_and_eight_devices(tmp_path):
  path = str(tmp_path / 'eight.npz')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu')
  subprocess.run([sys.executable, '-c', SHARDED_BATCHES, path], cwd=ROOT, env=env, check=True,
                 timeout=300)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ('data',))
  rng = np.random.default_rng(0)
  data = device_data.put_on_devices(rng.standard_normal((64, 6, 6, 3), np.float32),
                                    np.arange(64, dtype=np.int32), mesh)
  fn = jax.jit(lambda d, t: device_data.train_batch(
      d, t, seed=3, batch_size=16, steps_per_epoch=4, pad=4, flip=True))
  one = [np.asarray(b[k]) for t in (0, 5, 9) for b in [fn(data, t)] for k in ('image', 'label')]
  eight = np.load(path)
  for i, array in enumerate(one):
    np.testing.assert_array_equal(eight[f'arr_{i}'], array)


def test_config_checks():
  config = digits.get_config()
  config.dataset.update(device_resident=True, name='imagenet2012')
  with pytest.raises(ConfigError, match='held in memory'):
    plan_of(config)
