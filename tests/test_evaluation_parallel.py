"""10-crop and multi-scale testing batched, bucketed and data-parallel: the same scores as one
image at a time on one device, each example once, a bounded and counted number of compilations,
and the same result from 2 processes x 4 devices as from 1 process x 1 device."""

import contextlib
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from resnet_jax.data import datasets, imagenet
from resnet_jax.evaluation import protocols, views
from resnet_jax.parallel import sharding
from resnet_jax.testing.mock_tfds import jpeg_dataset, prepared_mock
from tests.harness import ROOT, free_port
from tests.test_evaluation import config_for, init, tiny_imagenet_net

# Three 4:3 photos that share every bucket, and a portrait taller than 2:1, which multi-scale
# testing cuts to twice its shorter side.
SIZES = [(300, 400), (375, 500), (400, 120), (240, 320)]


def photos():
  return [np.random.default_rng(i).integers(0, 256, (*s, 3), np.uint8) for i, s in
          enumerate(SIZES)]


@contextlib.contextmanager
def serve(data_dir, labels=(0,) * len(SIZES)):
  with prepared_mock('imagenet2012', data_dir, len(SIZES), splits=('train', 'validation')):
    with tfds.testing.mock_data(as_dataset_fn=jpeg_dataset(photos(), labels),
                                data_dir=data_dir):
      yield config_for(data_dir)


def all_predictions(config, mode, batch_size=0):
  parts = list(protocols.predictions(datasets.plan_for(config, training=False), tiny_imagenet_net(),
                                     init(tiny_imagenet_net()), mode, batch_size))
  return (np.concatenate([p[m] for p, _, m in parts]),
          np.concatenate([labels[m] for _, labels, m in parts]))


def right_and_wrong(probabilities):
  """Labels the scores rank first for examples 0 and 2 and last for 1 and 3; the errors that
  makes: top-1 and top-5 1/2."""
  return [int(p.argmax()) if i % 2 == 0 else int(p.argmin()) for i, p in
          enumerate(probabilities)]


def one_image_at_a_time(image, model, variables):
  """Multi-scale testing written out: each scale alone, the centre window by hand."""
  jpeg = imagenet.tf.io.encode_jpeg(image)
  apply = jax.jit(lambda x: jax.nn.softmax(model.apply(variables, x, train=False)))
  scores, shapes = [], set()
  for scale in views.SCALES:
    resized = imagenet.decode_resized(jpeg, scale).numpy()
    height, width = resized.shape[:2]
    longest = 2 * scale // 32 * 32  # MAX_ASPECT = 2.
    crop_h, crop_w = min(height // 32 * 32, longest), min(width // 32 * 32, longest)
    y, x = (height - crop_h) // 2, (width - crop_w) // 2
    shapes.add((crop_h, crop_w))
    scores.append(apply(resized[None, y:y + crop_h, x:x + crop_w])[0])
  return np.mean(scores, 0), shapes


def test_pad_batch_pads_every_array_and_masks_the_padding():
  batch = {'image': np.ones((3, 2, 2)), 'label': np.array([7, 8, 9])}
  padded, mask = sharding.pad_batch(batch, 5)
  assert padded['image'].shape == (5, 2, 2) and not padded['image'][3:].any()
  np.testing.assert_array_equal(padded['label'], [7, 8, 9, 0, 0])
  np.testing.assert_array_equal(mask, [True, True, True, False, False])
  (images, labels), _ = sharding.pad_batch((np.ones((2, 1)), np.ones(2)), 4)
  assert images.shape == (4, 1) and labels.shape == (4,)
  with pytest.raises(ValueError, match='disagree'):
    sharding.pad_batch({'a': np.ones(2), 'b': np.ones(3)}, 4)
  with pytest.raises(ValueError, match='does not fit'):
    sharding.pad_batch(np.ones(5), 4)


def test_view_shapes_are_bounded_as_documented():
  # Per scale, longer side s, s + 32, ..., 2s in either orientation, the square once:
  # 224: 2 * 7 + 1, 256: 2 * 8 + 1, 384: 2 * 12 + 1, 480: 2 * 15 + 1, 640: 2 * 20 + 1.
  assert views.max_view_shapes() == 15 + 17 + 25 + 31 + 41 == 129


def test_bucketed_multi_scale_equals_one_image_at_a_time(tmp_path):
  model = tiny_imagenet_net()
  variables = init(model)
  references = [one_image_at_a_time(image, model, variables) for image in photos()]
  expected = np.stack([scores for scores, _ in references])
  shapes = set().union(*(s for _, s in references))
  assert (448, 224) in shapes  # The 400x120 photo, cut to 2:1.

  labels = right_and_wrong(expected)
  compilations = []
  jax.clear_caches()
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, _, **kw: compilations.append(event)
      if event == '/jax/core/compile/backend_compile_duration' else None)
  try:
    with serve(str(tmp_path), labels) as config:
      result = protocols.evaluate(datasets.plan_for(config, training=False), model, variables,
                                  'multi_scale')
  finally:
    jax.monitoring.clear_event_listeners()
  # One compilation per view shape, counted as it happens, and no other computation compiled.
  assert result['compiled_shapes'] == len(shapes) == len(compilations) == 10
  assert result == {'error_top1': 0.5, 'error_top5': 0.5, 'num_examples': 4,
                    'compiled_shapes': 10}
  with serve(str(tmp_path), labels) as config:
    probabilities, served_labels = all_predictions(config, 'multi_scale')
  np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(served_labels, labels)


WORKER = '''
import sys
import jax
import numpy as np
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
port, processes, process = map(int, sys.argv[1:4])
jax.distributed.initialize(f'127.0.0.1:{port}', processes, process)
from resnet_jax.data import datasets
from resnet_jax.evaluation import protocols
from tests.test_evaluation_parallel import all_predictions, init, serve, tiny_imagenet_net
with serve(sys.argv[4] + f'/data_{process}', eval(sys.argv[5])) as config:
  ten_crop, _ = all_predictions(config, 'ten_crop')
  results = [protocols.evaluate(datasets.plan_for(config, training=False), tiny_imagenet_net(),
                                init(tiny_imagenet_net()), mode)
             for mode in ('ten_crop', 'multi_scale')]
np.savez(sys.argv[4] + f'/out_{process}.npz', ten_crop=ten_crop, results=[
    [r[k] for k in ('error_top1', 'error_top5', 'num_examples')] for r in results])
'''


@pytest.mark.e2e
def test_two_processes_of_four_devices_give_the_one_device_result(tmp_path):
  assert jax.local_device_count() == 1
  with serve(str(tmp_path / 'single')) as config:
    # batch_size 3: the second call holds 1 image and 2 of padding.
    ten_crop, _ = all_predictions(config, 'ten_crop', batch_size=3)
    multi_scale, _ = all_predictions(config, 'multi_scale')
  labels = right_and_wrong(ten_crop)
  multi_scale_rank = (multi_scale > multi_scale[np.arange(4), labels][:, None]).sum(1)

  port, env = free_port(), dict(os.environ, JAX_PLATFORMS='cpu',
                                XLA_FLAGS='--xla_force_host_platform_device_count=4')
  workers = [subprocess.Popen([sys.executable, '-c', WORKER, str(port), '2', str(i),
                               str(tmp_path), repr(labels)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
  outputs = [w.communicate(timeout=300)[0] for w in workers]
  assert all(w.returncode == 0 for w in workers), outputs[0][-3000:] + outputs[1][-3000:]
  parts = [np.load(tmp_path / f'out_{i}.npz') for i in range(2)]
  # Process 0 scored examples 0-1, process 1 examples 2-3 (tfds.even_splits): the portrait in
  # other buckets, so the processes made different calls of different shapes.
  np.testing.assert_allclose(np.concatenate([p['ten_crop'] for p in parts]), ten_crop,
                             rtol=1e-5, atol=1e-7)
  for part in parts:  # Each process reports the errors of the whole split.
    np.testing.assert_allclose(part['results'], [
        [0.5, 0.5, 4], [np.mean(multi_scale_rank >= 1), np.mean(multi_scale_rank >= 5), 4]])
