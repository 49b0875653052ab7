"""RandAugment and TrivialAugmentWide against torchvision's, on a real photograph.

Every operation at several of torchvision's magnitudes, both signs, is compared with what
torchvision applies to a PIL image (``torchvision.transforms.autoaugment._apply_op``, i.e. PIL's
ImageEnhance, ImageOps and affine transforms). Tolerances: every operation is exact (all pixels
equal) except Rotate, where at most 1 % of pixels may take a neighbouring source pixel (TF maps
coordinates in float32, PIL in float64, and nearest-neighbour sampling rounds the two apart on
pixel boundaries); interpolating bilinearly, the geometric operations are within 1 level of
PIL's on all but 1 % of pixels (those next to the black fill, which the two blend differently). The magnitude tables are torchvision's own, and the policies' choice of
operations is tested by telling each output's operation apart on the photograph.
"""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from scipy import stats
from sklearn.datasets import load_sample_images

from benchmarks import torch_input
from resnet_jax.data import auto_augment

torchvision = torch_input.import_torchvision()
from torchvision.transforms import InterpolationMode  # noqa: E402
from torchvision.transforms import autoaugment as tv_auto_augment  # noqa: E402

BINS = 31
ROTATE_MISMATCH = 0.01  # Fraction of pixels Rotate may sample from a neighbour.
P_MIN = 1e-3


@pytest.fixture(scope='module')
def photo():
  """A 200 x 240 window of scikit-learn's first sample photograph, uint8 RGB."""
  return load_sample_images().images[0][60:260, 150:390].copy()


def dull_copy(image):
  """The image's levels squeezed into 20..211, so AutoContrast and Equalize have work to do."""
  return (image.astype(np.int32) * 3 // 4 + 20).astype(np.uint8)


def torchvision_op(image, name, magnitude):
  return np.asarray(tv_auto_augment._apply_op(Image.fromarray(image), name, float(magnitude),
                                              InterpolationMode.NEAREST, None))


def ours(image, name, magnitude):
  return auto_augment.OPERATIONS[name](tf.constant(image),
                                       tf.constant(magnitude, tf.float32)).numpy()


def mismatch(a, b):
  return np.mean(np.any(a != b, axis=-1))


def tolerance(name):
  return ROTATE_MISMATCH if name == 'Rotate' else 0.0


def torchvision_space(policy, height, width):
  if policy == 'rand_augment':
    return tv_auto_augment.RandAugment()._augmentation_space(BINS, (height, width))
  return tv_auto_augment.TrivialAugmentWide()._augmentation_space(BINS)


def ours_space(policy, height, width):
  """The policy's magnitudes, equal to torchvision's up to float32 round-off (tested below):
  the policy tests tell operations apart by their outputs at exactly these magnitudes."""
  return auto_augment.magnitudes(policy, BINS, height, width)


@pytest.mark.parametrize('policy', ['rand_augment', 'trivial_augment_wide'])
def test_operations_and_magnitudes_are_torchvisions(policy):
  expected = torchvision_space(policy, 200, 240)
  found = auto_augment.magnitudes(policy, BINS, 200, 240)
  assert list(found) == list(expected)
  for name, (magnitudes, signed) in expected.items():
    assert found[name][1] == signed, name
    if magnitudes.ndim == 0:
      assert found[name][0] is None, name
    else:
      np.testing.assert_allclose(found[name][0], magnitudes.numpy(), rtol=1e-6, err_msg=name)


@pytest.mark.parametrize('policy', ['rand_augment', 'trivial_augment_wide'])
def test_each_operation_matches_torchvision_on_a_photograph(photo, policy):
  dull = dull_copy(photo)
  for name, (magnitudes, signed) in torchvision_space(policy, *photo.shape[:2]).items():
    levels = [0.0] if magnitudes.ndim == 0 else [float(magnitudes[b]) for b in (1, 9, 17, 30)]
    for magnitude in levels:
      for value in ([magnitude, -magnitude] if signed else [magnitude]):
        for image in (photo, dull):
          expected, found = torchvision_op(image, name, value), ours(image, name, value)
          assert found.shape == expected.shape and found.dtype == np.uint8
          assert mismatch(found, expected) <= tolerance(name), (name, value)


BILINEAR_MISMATCH = 0.01  # Fraction of pixels more than 1 level from PIL's, at the fill's edges.


def test_geometric_operations_interpolate_bilinearly_as_torchvision(photo):
  geometric = auto_augment._geometric('bilinear')
  space = torchvision_space('trivial_augment_wide', *photo.shape[:2])
  for name in geometric:
    for b in (5, 20, 30):
      for value in (float(space[name][0][b]), -float(space[name][0][b])):
        expected = np.asarray(tv_auto_augment._apply_op(
            Image.fromarray(photo), name, value, InterpolationMode.BILINEAR, None)).astype(int)
        found = geometric[name](tf.constant(photo), tf.constant(value, tf.float32)).numpy()
        far = np.mean(np.abs(found.astype(int) - expected) > 1)
        assert far <= BILINEAR_MISMATCH, (name, value, far)


def one_grey_channel(image):
  return np.asarray(Image.fromarray(image).convert('L'))[:, :, None]


def test_operations_on_one_channel_match_torchvision_on_a_grey_image(photo):
  grey = one_grey_channel(dull_copy(photo))
  for name, (magnitudes, _) in torchvision_space('trivial_augment_wide', 200, 240).items():
    value = 0.0 if magnitudes.ndim == 0 else float(magnitudes[17])
    expected = torchvision_op(grey[:, :, 0], name, value)[:, :, None]
    assert mismatch(ours(grey, name, value), expected) <= tolerance(name), name


def identify(output, candidates):
  """The keys (name, ...) of the candidates that ``output`` equals within their tolerance."""
  keys = list(candidates)
  stack = np.stack([candidates[k] for k in keys])
  differ = np.mean(np.any(stack != output, axis=-1), axis=(1, 2))
  limits = np.array([tolerance(k[0]) for k in keys])
  return {k for k, d, limit in zip(keys, differ, limits) if d <= limit}


def test_rand_augment_draws_operations_uniformly_and_signs_evenly(photo):
  dull = dull_copy(photo)
  magnitude = 9
  space = ours_space('rand_augment', *photo.shape[:2])
  candidates = {}
  for name, (magnitudes, signed) in space.items():
    value = 0.0 if magnitudes is None else float(magnitudes[magnitude])
    for negated in ((False, True) if signed else (False,)):
      candidates[name, negated] = torchvision_op(dull, name, -value if negated else value)
  augment = tf.function(lambda key: auto_augment.augment(
      tf.constant(dull), key, 'rand_augment', 1, magnitude, BINS))
  draws = 20 * len(space)
  names, negations = [], []
  for i in range(draws):
    found = identify(augment(tf.constant([i, 7], tf.int64)).numpy(), candidates)
    assert len(found) == 1, found  # Each output is exactly one of torchvision's.
    (name, negated), = found
    names.append(name)
    if space[name][1]:
      negations.append(negated)
  counts = [names.count(name) for name in space]
  assert stats.chisquare(counts).pvalue > P_MIN, counts
  assert stats.binomtest(sum(negations), len(negations), 0.5).pvalue > P_MIN


def test_rand_augment_applies_its_operations_in_turn(photo):
  # Two operations: the output is some torchvision operation applied to some other's output.
  dull = dull_copy(photo)
  space = ours_space('rand_augment', *photo.shape[:2])
  values = {name: 0.0 if m is None else float(m[5]) for name, (m, _) in space.items()}
  output = auto_augment.augment(tf.constant(dull), tf.constant([3, 1], tf.int64), 'rand_augment',
                                2, 5, BINS).numpy()
  found = []
  for first, second in ((a, b) for a in space for b in space):
    for s1 in ((1, -1) if space[first][1] else (1,)):
      middle = torchvision_op(dull, first, s1 * values[first])
      for s2 in ((1, -1) if space[second][1] else (1,)):
        if mismatch(output, torchvision_op(middle, second, s2 * values[second])) <= max(
            tolerance(first), tolerance(second)) * 2:
          found.append((first, second))
  assert found


def test_trivial_augment_wide_outputs_are_torchvisions_operations(photo):
  dull = dull_copy(photo[::4, ::4])  # 50 x 60: many candidates, quickly.
  space = ours_space('trivial_augment_wide', *dull.shape[:2])
  candidates = {}
  for name, (magnitudes, signed) in space.items():
    for b in range(1 if magnitudes is None else BINS):
      value = 0.0 if magnitudes is None else float(magnitudes[b])
      for negated in ((False, True) if signed else (False,)):
        candidates[name, (b, negated)] = torchvision_op(dull, name, -value if negated else value)
  augment = tf.function(lambda key: auto_augment.augment(
      tf.constant(dull), key, 'trivial_augment_wide', 1, 0, BINS))
  names = []
  for i in range(20 * len(space)):
    found = identify(augment(tf.constant([i, 9], tf.int64)).numpy(), candidates)
    assert found, i  # Every output is one of torchvision's operations at one of its bins.
    if len({name for name, _ in found}) == 1:  # Only this operation gives it.
      names.append(next(iter(found))[0])
  # Some bins of an operation give what another does (bin 0 of a signed one is Identity, high
  # thresholds of Solarize change nothing here): each operation's share of the outputs only
  # it gives is the fraction of its bins and signs whose image no other operation gives.
  unique = {name: np.mean([{n for n, _ in identify(image, candidates)} == {name}
                           for (n, _), image in candidates.items() if n == name])
            for name in space}
  names_seen = [name for name in space if unique[name] > 0]
  counts = np.array([names.count(name) for name in names_seen])
  expected = np.array([unique[name] for name in names_seen])
  expected = expected / expected.sum() * counts.sum()
  assert stats.chisquare(counts, expected).pvalue > P_MIN, dict(zip(names_seen, counts))
