"""Evaluation modes: 10-crop geometry, centre vs 10-crop, multi-scale over a mock ImageNet."""

import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import imagenet
from resnet_jax import models
from resnet_jax.data import datasets
from resnet_jax.evaluation import protocols
from resnet_jax.evaluation import views as eval_views
from resnet_jax.testing.mock_tfds import jpeg_dataset, prepared_mock

NUM_EXAMPLES = 5


def test_ten_crops_are_the_corners_the_centre_and_their_flips():
  image = np.arange(6 * 8).reshape(6, 8, 1)
  crops = eval_views.ten_crops(image, 4).numpy()
  expected = [image[0:4, 0:4], image[0:4, 4:8], image[2:6, 0:4], image[2:6, 4:8],
              image[1:5, 2:6]]
  expected += [c[:, ::-1] for c in expected]
  np.testing.assert_array_equal(crops, np.stack(expected))
  assert len({c.tobytes() for c in crops}) == 10


def test_multi_scale_views_keep_the_centre_window_of_whole_strides():
  image = np.arange(70 * 100).reshape(70, 100, 1)
  np.testing.assert_array_equal(eval_views.centre_crop(image, 64, 96).numpy(), image[3:67, 2:98])
  # 300x400 at 224 -> 224x298.7 -> 224x299 -> 224x288; 500x260 at 640 -> 1230.8x640 -> 1216x640;
  # 100x400 at 224 -> 224x896, capped at twice the shorter side -> 224x448.
  for shape, scale, expected in (((300, 400, 3), 224, (224, 288)), ((500, 260, 3), 640, (1216, 640)),
                                 ((100, 400, 3), 224, (224, 448))):
    assert tuple(eval_views.view_shape(shape, scale).numpy()) == expected


@pytest.fixture
def mock_imagenet(tmp_path):
  """Serves ``images`` (uint8 arrays) as JPEGs with ``labels`` as mocked imagenet2012."""
  data_dir = str(tmp_path)

  @contextlib.contextmanager
  def serve(images, labels):
    with prepared_mock('imagenet2012', data_dir, NUM_EXAMPLES, splits=('train', 'validation')):
      with tfds.testing.mock_data(as_dataset_fn=jpeg_dataset(images, labels),
                                  data_dir=data_dir):
        yield config_for(data_dir)
  return serve


def config_for(data_dir):
  config = imagenet.imagenet_config('resnet18')
  config.model.bn_group_size = 0  # Global BatchNorm: the batches here are small.
  config.dataset.data_dir = data_dir
  config.eval_batch_size = 20  # Ten-crop: 2 images per call, so the last call is padded.
  return config


def tiny_imagenet_net():
  return models.ResNet(stage_sizes=(1,), block=models.BasicBlock, widths=(4,), stem='imagenet',
                       num_classes=1000)


def init(model):
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
  # A strong classifier bias makes the scores differ clearly between different inputs.
  return jax.tree_util.tree_map_with_path(
      lambda path, x: jax.random.normal(jax.random.key(1), x.shape) * 3
      if 'fc' in str(path) else x, variables)


def all_probabilities(config, model, variables, mode):
  parts = list(protocols.predictions(datasets.plan_for(config, training=False), model,
                                     variables, mode))
  probabilities = np.concatenate([p[m] for p, _, m in parts])
  assert len(probabilities) == NUM_EXAMPLES  # Each example exactly once.
  return probabilities


def test_constant_images_give_the_centre_crop_result(mock_imagenet):
  sizes = [(300, 400), (256, 256), (500, 260), (280, 290), (333, 500)]
  colours = np.random.default_rng(0).integers(0, 256, (NUM_EXAMPLES, 3))
  constant = [np.broadcast_to(c, (*s, 3)).astype(np.uint8) for c, s in zip(colours, sizes)]
  noise = [np.random.default_rng(i).integers(0, 256, (*s, 3)).astype(np.uint8)
           for i, s in enumerate(sizes)]
  model = tiny_imagenet_net()
  variables = init(model)
  probabilities = {}
  for kind, images in (('constant', constant), ('noise', noise)):
    with mock_imagenet(images, range(NUM_EXAMPLES)) as config:
      for mode in ('center', 'ten_crop'):
        probabilities[kind, mode] = all_probabilities(config, model, variables, mode)

  np.testing.assert_allclose(probabilities['constant', 'ten_crop'],
                             probabilities['constant', 'center'], atol=1e-5)
  # Not a vacuous check: on images that vary, the ten crops see something else than the centre.
  assert np.abs(probabilities['noise', 'ten_crop'] - probabilities['noise', 'center']).max() > 1e-4


SEEN_SHAPES = set()
# Shorter side -> the class the recorder model picks at that scale.
CLASS_AT_SCALE = {224: 0, 256: 0, 384: 1, 480: 2, 640: 3}


class ScaleRecorder(nn.Module):
  """Records each input shape; all but certainly picks CLASS_AT_SCALE[shorter side]."""

  @nn.compact
  def __call__(self, x, train):
    del train
    SEEN_SHAPES.add(x.shape)
    chosen = CLASS_AT_SCALE[min(x.shape[1:3])]
    # Ties among the other classes are broken towards lower classes.
    logits = 50.0 * jax.nn.one_hot(chosen, 1000) - 1e-3 * jnp.arange(1000.0)
    return jnp.broadcast_to(logits, (x.shape[0], 1000)) + 0 * x.mean()


def test_multi_scale_averages_whole_images_at_five_scales(mock_imagenet):
  sizes = [(300, 400), (256, 256), (500, 260), (280, 290), (333, 500)]
  images = [np.random.default_rng(i).integers(0, 256, (*s, 3)).astype(np.uint8)
            for i, s in enumerate(sizes)]
  labels = [0, 0, 3, 4, 9]
  SEEN_SHAPES.clear()
  with mock_imagenet(images, labels) as config:
    result = protocols.evaluate(datasets.plan_for(config, training=False), ScaleRecorder(), {},
                                'multi_scale')

  # Shorter side at each scale; longer side rescaled alike, cut to a multiple of 32.
  expected_shapes = set()
  for height, width in sizes:
    for scale in CLASS_AT_SCALE:
      longer = round(max(height, width) * scale / min(height, width)) // 32 * 32
      expected_shapes.add((scale, longer) if height <= width else (longer, scale))
  assert {shape[1:3] for shape in SEEN_SHAPES} == expected_shapes
  # By hand: 300x400 at 224 -> 224x298.7 -> 224x299 -> 224x288; 500x260 at 640 -> 1230.8x640
  # -> 1231x640 -> 1216x640; 256x256 at 480 -> 480x480 -> 480x480.
  assert {(224, 288), (1216, 640), (480, 480)} <= expected_shapes
  # One batch size per shape: the pixels of a 10-crop call of 2 images (2 x 10 x 224 x 224 =
  # 1,003,520), e.g. 20 views of 224x224, 2 of 640x640, at least 1 of 1216x640.
  batch_sizes = {shape[1:3]: shape[0] for shape in SEEN_SHAPES}
  assert len(batch_sizes) == len(SEEN_SHAPES)
  assert (batch_sizes[224, 224], batch_sizes[640, 640], batch_sizes[1216, 640]) == (20, 2, 1)
  # Averaged over the scales, class 0 has 2/5 of the probability, classes 1, 2, 3 have 1/5
  # each: top-1 is class 0 and top-5 classes 0-4. (The 640 scale alone would say class 3.)
  assert result['num_examples'] == 5
  assert result['error_top1'] == pytest.approx(3 / 5)
  assert result['error_top5'] == pytest.approx(1 / 5)


def test_jpeg_modes_refuse_small_image_datasets():
  config = imagenet.imagenet_config('resnet18')
  config.model.bn_group_size = 0  # Global BatchNorm: the batches here are small.
  config.dataset.update(name='cifar10', image_size=32, eval_split='test')
  with pytest.raises(ValueError, match="'center'"):
    next(protocols.predictions(datasets.plan_for(config, training=False), None, None, 'ten_crop'))


def test_every_mode_counts_each_example_of_random_mock_images_once(tmp_path):
  with prepared_mock('imagenet2012', str(tmp_path), 3, splits=('train', 'validation')):
    for mode in protocols.MODES:
      result = protocols.evaluate(datasets.plan_for(config_for(str(tmp_path)), training=False),
                                  ScaleRecorder(), {}, mode)
      assert result['num_examples'] == 3, mode
