"""The modern training augmentations a config's ``dataset`` section asks for, applied on the host.

Each is off by default (the paper's recipe): the Inception-style random-resized crop
(``dataset.train_crop='random_resized'``, the streamed path's ``imagenet.train_example``), a
policy of ``auto_augment`` on the uint8 crop, then random erasing (``boxes.erase``) where the
pixels are normalised. Every part draws from its own tag folded into the example's key, so
switching one on leaves the others' draws, and the paper's, as they were.
"""

import dataclasses

from resnet_jax.data import auto_augment, boxes
from resnet_jax.data.streamed_order import fold

_CROP, _POLICY, _ERASING = 1, 2, 3  # Key tags of the parts, folded into the example's key.


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """The modern parts of a config's training augmentation; the defaults are the paper's."""
  crop_scale: tuple[float, float] | None = None  # Random-resized crop's area fractions.
  crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
  lighting: bool = True  # AlexNet's PCA lighting (the streamed path).
  policy: str | None = None  # One of config_checks.AUTO_AUGMENT_POLICIES.
  num_ops: int = 2
  magnitude: int = 9
  bins: int = 31
  interpolation: str = 'nearest'  # Of the policy's geometric operations.
  erasing: float = 0.0
  erasing_scale: tuple[float, float] = (0.02, 0.33)
  erasing_ratio: tuple[float, float] = (0.3, 3.3)

  @classmethod
  def of(cls, dataset) -> 'Augmentation':
    """The augmentation of a config's ``dataset`` section."""
    return cls(
        crop_scale=tuple(dataset.crop_scale) if dataset.train_crop == 'random_resized' else None,
        crop_ratio=tuple(dataset.crop_ratio), lighting=dataset.pca_lighting,
        policy=dataset.auto_augment, num_ops=dataset.auto_augment_ops,
        magnitude=dataset.auto_augment_magnitude, bins=dataset.auto_augment_bins,
        interpolation=dataset.auto_augment_interpolation,
        erasing=dataset.random_erasing, erasing_scale=tuple(dataset.erasing_scale),
        erasing_ratio=tuple(dataset.erasing_ratio))

  def crop_window(self, shape, key):
    """[y, x, h, w] of the random-resized crop of an image of ``shape``."""
    return boxes.resized_crop_window(shape, fold(key, _CROP), self.crop_scale, self.crop_ratio)

  def policy_of(self, image, key):
    """``image`` (uint8) through the auto-augment policy, if any."""
    if not self.policy:
      return image
    return auto_augment.augment(image, fold(key, _POLICY), self.policy, self.num_ops,
                                self.magnitude, self.bins, self.interpolation)

  def erase(self, image, key, value):
    """``image`` with, with probability ``erasing``, a random box set to ``value``."""
    if not self.erasing:
      return image
    return boxes.erase(image, fold(key, _ERASING), self.erasing, self.erasing_scale,
                       self.erasing_ratio, value)
