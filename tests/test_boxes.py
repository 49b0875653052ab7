"""The random-resized crop's windows and random erasing's boxes against torchvision's and their
configured ranges: statistical tests over many draws (scipy), the fall-backs by hand.

Reference draws come from torchvision's own ``RandomResizedCrop.get_params`` and
``RandomErasing.get_params`` (two-sample Kolmogorov-Smirnov tests on the area fraction, the
aspect ratio and the position); where every draw fits, the area fraction must be uniform in
``scale`` and the log aspect ratio uniform in log ``ratio`` (one-sample tests). The seeds are
fixed, so the tests are deterministic: a failure means a wrong distribution.
"""

import jax
import numpy as np
import pytest
import tensorflow as tf
import torch
from scipy import stats

from benchmarks import torch_input
from resnet_jax.data import boxes, device_resident

torchvision = torch_input.import_torchvision()

DRAWS = 3000
P_MIN = 1e-3
CROP_SCALE, CROP_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)
ERASING_SCALE, ERASING_RATIO = (0.02, 0.33), (0.3, 3.3)


def tf_boxes(fn, shape, scale, ratio, draws=DRAWS):
  """int [draws, 4] (y, x, h, w) of ``fn`` (a ``boxes`` sampler) over keys (i, 5)."""
  keys = tf.stack([tf.range(draws, dtype=tf.int64), tf.fill([draws], tf.constant(5, tf.int64))],
                  1)
  draw = tf.function(lambda keys: tf.map_fn(lambda key: fn(tf.constant(shape), key, scale, ratio),
                                            keys, fn_output_signature=tf.int32))
  return draw(keys).numpy()


def torchvision_crops(shape, draws=DRAWS):
  torch.manual_seed(0)
  image = torch.zeros((3, *shape[:2]))
  get_params = torchvision.transforms.RandomResizedCrop.get_params
  return np.array([get_params(image, list(CROP_SCALE), list(CROP_RATIO)) for _ in range(draws)])


def torchvision_erasing(shape, draws=DRAWS):
  torch.manual_seed(0)
  image = torch.zeros((3, *shape[:2]))
  get_params = torchvision.transforms.RandomErasing.get_params
  found = []
  for _ in range(draws):
    y, x, h, w, _ = get_params(image, ERASING_SCALE, ERASING_RATIO, [0.0])
    found.append((y, x, h, w) if (h, w) != tuple(shape[:2]) else (0, 0, 0, 0))  # No box.
  return np.array(found)


def features(windows, shape):
  """Area fraction, log(w / h), relative y and x (where there is room) of [N, 4] windows."""
  y, x, h, w = windows.T.astype(np.float64)
  height, width = shape[:2]
  room_y, room_x = height - h, width - w
  return {'area': h * w / (height * width), 'log_aspect': np.log(w / h),
          'y': (y / room_y)[room_y > 0], 'x': (x / room_x)[room_x > 0]}


def assert_same_distribution(ours, theirs):
  for name in ours:
    assert stats.ks_2samp(ours[name], theirs[name]).pvalue > P_MIN, name


@pytest.mark.parametrize('shape', [(375, 500, 3), (640, 300, 3)])
def test_random_resized_crop_windows_are_drawn_as_torchvisions(shape):
  ours = tf_boxes(boxes.resized_crop_window, shape, CROP_SCALE, CROP_RATIO)
  y, x, h, w = ours.T
  assert (h >= 1).all() and (w >= 1).all() and (y + h <= shape[0]).all() and (
      x + w <= shape[1]).all() and (y >= 0).all() and (x >= 0).all()
  assert_same_distribution(features(ours, shape), features(torchvision_crops(shape), shape))


def test_random_resized_crop_fills_its_ranges_uniformly_where_every_draw_fits():
  shape, scale = (1000, 1000, 3), (0.08, 0.5)  # sqrt(0.5 * 4/3) < 1: every first draw fits.
  found = features(tf_boxes(boxes.resized_crop_window, shape, scale, CROP_RATIO), shape)
  low, high = np.log(CROP_RATIO)
  assert stats.kstest(found['area'], stats.uniform(scale[0], scale[1] - scale[0]).cdf).pvalue \
      > P_MIN
  assert stats.kstest(found['log_aspect'], stats.uniform(low, high - low).cdf).pvalue > P_MIN
  for side in ('y', 'x'):
    assert stats.kstest(found[side], stats.uniform(0, 1).cdf).pvalue > P_MIN


@pytest.mark.parametrize('shape, window', [
    # Aspect 10 > 4/3: full height 100, width round(100 * 4/3) = 133, centred: x = 867 // 2.
    ((100, 1000, 3), [0, 433, 100, 133]),
    # Aspect 1/10 < 3/4: full width 100, height round(100 / (3/4)) = 133, y = 867 // 2.
    ((1000, 100, 3), [433, 0, 133, 100])])
def test_random_resized_crop_falls_back_to_the_centre_crop_by_hand(shape, window):
  # Areas of at least 90 % of the image never fit at these ratios (the short side is too short).
  found = tf_boxes(boxes.resized_crop_window, shape, (0.9, 1.0), CROP_RATIO, draws=20)
  np.testing.assert_array_equal(found, np.tile(window, (20, 1)))


@pytest.mark.parametrize('shape', [(224, 224, 3), (64, 128, 3)])
def test_erasing_boxes_are_drawn_as_torchvisions(shape):
  ours = tf_boxes(boxes.erasing_box, shape, ERASING_SCALE, ERASING_RATIO)
  key = jax.random.key(5)
  on_device = np.asarray(device_resident.erasing_boxes(key, DRAWS, *shape[:2], ERASING_SCALE,
                                                       ERASING_RATIO))
  theirs = torchvision_erasing(shape)
  for found in (ours, on_device):
    y, x, h, w = found.T
    assert (h < shape[0]).all() and (w < shape[1]).all() and (y + h <= shape[0]).all() and (
        x + w <= shape[1]).all()
    drawn, reference = found[found[:, 2] > 0], theirs[theirs[:, 2] > 0]
    assert abs(len(drawn) - len(reference)) <= 0.01 * DRAWS  # Draws that find no box: rare.
    # torchvision's box is h = sqrt(area * aspect) high: log(w / h) = -log(aspect).
    assert_same_distribution(features(drawn, shape), features(reference, shape))


def erased_fractions(images):
  """Per image: the fraction of pixels set to 0 (an image of ones before), checking the zeros
  form one rectangle."""
  found = []
  for image in np.asarray(images):
    zero = np.all(image == 0, axis=-1)
    rows, cols = np.nonzero(zero.any(1))[0], np.nonzero(zero.any(0))[0]
    if len(rows):
      assert zero[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()  # One filled rectangle.
    found.append(zero.mean())
  return np.array(found)


def test_random_erasing_erases_with_its_probability_a_box_of_its_area():
  probability, count, shape = 0.3, 1000, (32, 48, 3)
  images = np.ones((count, *shape), np.float32)
  erase = tf.function(lambda image, key: boxes.erase(image, key, probability, ERASING_SCALE,
                                                     ERASING_RATIO, 0.0))
  on_host = [erase(image, tf.constant([i, 3], tf.int64)) for i, image in enumerate(images)]
  on_device = device_resident.erase(images, jax.random.key(3), probability, ERASING_SCALE,
                                    ERASING_RATIO)
  reference = features(torchvision_erasing(shape), shape)['area']
  for fractions in (erased_fractions(on_host), erased_fractions(on_device)):
    erased = fractions[fractions > 0]
    assert stats.binomtest(len(erased), count, probability).pvalue > P_MIN
    assert stats.ks_2samp(erased, reference[reference > 0]).pvalue > P_MIN
