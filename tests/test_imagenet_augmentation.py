"""ImageNet train augmentation: its distribution against the paper's, measured from the outputs.

The input JPEG is a colour ramp (red grows with x, green with y), so each output image tells
where its window came from: a straight-line fit of red across columns gives the window's width
(hence the shorter side it was scaled to), its left edge and whether it was flipped; green across
rows gives its top edge. The offsets give the lighting noise. Each is tested against the
distribution the paper prescribes, computed independently (scipy's Kolmogorov-Smirnov and
binomial tests): shorter side uniform in [256, 480], window position uniform, flip with
probability 1/2, lighting alpha ~ N(0, 0.1^2) (AlexNet).
"""

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from resnet_jax import steps
from resnet_jax.data import imagenet

SIZE = 224
SAMPLES = 300
P_MIN = 1e-3  # A fixed seed: the tests are deterministic; a failure means a wrong distribution.


def ramp_jpeg(height, width):
  y, x = np.mgrid[:height, :width].astype(np.float64)
  image = np.stack([20 + 215 * x / (width - 1), 20 + 215 * y / (height - 1),
                    np.full_like(x, 128)], -1)
  return tf.io.encode_jpeg(np.round(image).astype(np.uint8), quality=98).numpy()


def line_fit(profile):
  """(intercept, slope) of a least-squares line through profile[j] at j = 0, 1, ..."""
  slope, intercept = np.polyfit(np.arange(len(profile)), profile, 1)
  return intercept, slope


def windows(height, width):
  """(shorter side, relative y, relative x, flipped, image offsets) of SAMPLES train examples."""
  jpeg = ramp_jpeg(height, width)
  ramp = 215 / (width - 1), 215 / (height - 1)  # Red per input column, green per input row.
  side = min(height, width)
  found = []
  for i in range(SAMPLES):
    image, offset = imagenet.train_example(
        jpeg, tf.constant([i, 12345], tf.int64), SIZE)
    image = np.asarray(image, np.float64)
    red0, red_slope = line_fit(image[:, :, 0].mean(0))
    green0, green_slope = line_fit(image[:, :, 1].mean(1))
    flipped = red_slope < 0
    crop = abs(red_slope) / ramp[0] * SIZE  # Input pixels per output pixel, times SIZE.
    # Output pixel j samples input x = left + (j + 0.5) * crop / SIZE - 0.5 (half-pixel centres).
    first_red = red0 if not flipped else red0 + red_slope * (SIZE - 1)
    left = (first_red - 20) / ramp[0] - 0.5 * crop / SIZE + 0.5
    top = (green0 - 20) / ramp[1] - 0.5 * crop / SIZE + 0.5
    found.append((side * SIZE / crop, top / (height - crop + 1), left / (width - crop + 1),
                  flipped, np.asarray(offset)))
  return found


@pytest.mark.parametrize('height, width', [(300, 400), (1500, 1600)])
def test_train_augmentation_follows_the_papers_distribution(height, width):
  """300x400: windows both enlarged and shrunk; 1500x1600: decoded at 1/2 and 1/4 DCT scale."""
  shorter, top, left, flipped, offsets = zip(*windows(height, width))
  low, high = imagenet.IMAGENET_SCALE_RANGE
  # Window widths are whole pixels: the implied shorter side is within rounding of the sample.
  slack = max(shorter) ** 2 / (min(height, width) * SIZE)
  assert low - slack <= min(shorter) and max(shorter) <= high + slack
  assert stats.kstest(shorter, stats.uniform(low, high - low).cdf).pvalue > P_MIN
  for position in (top, left):
    assert stats.kstest(np.clip(position, 0, 1), 'uniform').pvalue > P_MIN
  assert stats.binomtest(sum(flipped), SAMPLES, 0.5).pvalue > P_MIN
  # Offsets = eigvec @ (alpha * eigval) - mean: solve for alpha, i.i.d. N(0, 0.1^2).
  shift = np.asarray(offsets) + np.asarray(imagenet.IMAGENET_RGB_MEAN)
  alpha = np.linalg.solve(np.asarray(imagenet.PCA_EIGVEC), shift.T).T / np.asarray(
      imagenet.PCA_EIGVAL)
  for component in alpha.T:
    assert stats.kstest(component, stats.norm(0, 0.1).cdf).pvalue > P_MIN
  assert np.abs(np.corrcoef(alpha.T) - np.eye(3)).max() < 4 / np.sqrt(SAMPLES)


def test_model_images_scale_and_shift_uint8_on_the_device_by_hand():
  batch = {'image': np.array([[[[0, 255, 51]]], [[[102, 0, 255]]]], np.uint8),
           'image_offset': np.array([[-0.5, 0.0, 0.1], [0.25, -0.25, 0.0]], np.float32)}
  np.testing.assert_allclose(steps.model_images(batch)[:, 0, 0],
                             [[-0.5, 1.0, 0.3], [0.65, -0.25, 1.0]], atol=1e-6)
  floats = np.ones((1, 2, 2, 3), np.float32)
  assert steps.model_images({'image': floats}) is floats  # Preprocessed already: untouched.
