"""One entry per dataset: the facts every other module reads.

A dataset's entry says how many classes and channels it has, which image sizes a config may ask
for, its splits and their sizes, and its preprocessing family:

* ``SMALL`` (the paper's CIFAR-10 recipe): decoded and held in memory, padded and randomly
  cropped (``pad``) and flipped (``flip``), the per-pixel mean of the training split subtracted;
  the order of each epoch is a permutation, so a resume seeks straight to its step. These
  datasets can also live on the accelerators (``dataset.device_resident``).
* ``IMAGENET`` (the paper's ImageNet recipe): encoded images streamed from disk, scale
  augmentation and PCA lighting for training, centre crops (or the paper's 10-crop and
  multi-scale views) for evaluation, the ImageNet per-channel mean (or the dataset's per-pixel
  one) subtracted on the device.

Adding a dataset of either family is one entry here; a tfds dataset without an entry is read
from its builder's info (``data.specs``), its family chosen by ``family_of``. A dataset without a
``train`` split is evaluation-only (``DatasetSpec.eval_only``). Split sizes are those of the tfds
catalog for the installed tfds version. A folder of one's own images (``IMAGE_FOLDER``,
``data.image_folder``) has no entry: its classes, channels and splits are read from the folder,
and ``folder_spec`` gives its facts at a ``dataset.image_size``. Nothing here imports TensorFlow.
"""

import dataclasses

from resnet_jax.errors import ConfigError

SMALL = 'small'
IMAGENET = 'imagenet'

TRAIN_SPLIT = 'train'
# The largest images, in pixels a side, that the SMALL family holds in memory (12 KB in RGB).
SMALL_MAX_SIDE = 64
# IMAGENET crops: evaluation cuts them at shorter side 256, so they are at most 256 wide.
IMAGENET_CROP_SIZES = (32, 256)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """The facts of one tfds dataset that training and evaluation need."""
  name: str                     # The config's dataset.name.
  num_classes: int
  channels: int                 # As the model sees them (IMAGENET images are decoded as RGB).
  family: str                   # SMALL or IMAGENET.
  image_sizes: tuple[int, int]  # The smallest and largest ``dataset.image_size``.
  splits: dict[str, int]        # Split name -> number of examples.
  pad: int = 0                  # SMALL: pixels of zero padding on each side before a random crop.
  flip: bool = False            # SMALL: random horizontal flips.
  tfds_name: str = ''           # The tfds name, with its config ('imagenette/full-size-v2');
                                # empty: ``name``.
  label_feature: str = 'label'  # The tfds feature that holds the class.
  label_sets: bool = False      # Each image labelled with a set of classes (ReaL): evaluation
                                # scores a prediction against its set (steps.top_k_set_errors).
  prepared_dir: str = ''        # A dataset prepared outside tfds' catalog (an image folder): the
                                # directory tfds.builder_from_directory reads.
  train_pixel_mean: bool = False  # IMAGENET: always the per-pixel mean of the train split, as
                                  # dataset.imagenet_per_pixel_mean asks for ImageNet.

  def __post_init__(self):
    if not self.tfds_name:
      object.__setattr__(self, 'tfds_name', self.name)

  @property
  def in_memory(self) -> bool:
    """Decoded into memory (SMALL) rather than streamed from its records (IMAGENET)."""
    return self.family == SMALL

  @property
  def has_views(self) -> bool:
    """Whether the paper's 10-crop and multi-scale views apply: full-size images (IMAGENET)."""
    return self.family == IMAGENET

  @property
  def eval_only(self) -> bool:
    """No ``train`` split: the dataset evaluates a net trained on another of its label space."""
    return TRAIN_SPLIT not in self.splits


def family_of(height: int | None, width: int | None) -> str:
  """The family of images of this shape: SMALL for a fixed square of at most SMALL_MAX_SIDE
  pixels a side, else IMAGENET (larger images, other aspect ratios, sizes that vary: None)."""
  return SMALL if height == width and height is not None and height <= SMALL_MAX_SIDE else IMAGENET


def _imagenet_style(name, num_classes, splits, **facts):
  return DatasetSpec(name, num_classes=num_classes, channels=3, family=IMAGENET,
                     image_sizes=IMAGENET_CROP_SIZES, splits=splits, **facts)


DATASETS = {spec.name: spec for spec in (
    # scikit-learn's 8x8 handwritten digits, upsampled; the bundled offline dataset.
    DatasetSpec('digits', num_classes=10, channels=1, family=SMALL, image_sizes=(8, 64),
                splits={'train': 1_500, 'test': 297}, pad=2, flip=False),
    # Random 32x32 crops of the padded 32x32 images.
    DatasetSpec('cifar10', num_classes=10, channels=3, family=SMALL, image_sizes=(32, 32),
                splits={'train': 50_000, 'test': 10_000}, pad=4, flip=True),
    # CIFAR-10's images and recipe, 100 classes.
    DatasetSpec('cifar100', num_classes=100, channels=3, family=SMALL, image_sizes=(32, 32),
                splits={'train': 50_000, 'test': 10_000}, pad=4, flip=True),
    # House numbers: a flip turns a digit into another shape, so crops only.
    DatasetSpec('svhn_cropped', num_classes=10, channels=3, family=SMALL, image_sizes=(32, 32),
                splits={'train': 73_257, 'test': 26_032, 'extra': 531_131}, pad=4, flip=False),
    _imagenet_style('imagenet2012', 1000, {'train': 1_281_167, 'validation': 50_000}),
    # Ten easily told ImageNet classes at full size: the quick stand-in for ImageNet.
    _imagenet_style('imagenette', 10, {'train': 9_469, 'validation': 3_925},
                    tfds_name='imagenette/full-size-v2'),
    # Small transfer sets of photographs (caltech101's 102 classes include a background class).
    _imagenet_style('oxford_flowers102', 102, {'train': 1_020, 'validation': 1_020,
                                               'test': 6_149}),
    _imagenet_style('caltech101', 102, {'train': 3_060, 'test': 6_084}),
    # Evaluation-only test sets in ImageNet's label space: a new test set drawn as ImageNet's was,
    # and ImageNet's validation images relabelled with a set of classes each (ReaL).
    _imagenet_style('imagenet_v2', 1000, {'test': 10_000},
                    tfds_name='imagenet_v2/matched-frequency'),
    _imagenet_style('imagenet2012_real', 1000, {'validation': 50_000},
                    label_feature='real_label', label_sets=True),
)}


def get(name: str) -> DatasetSpec:
  """The entry of ``name``, or a ConfigError that lists the datasets there are."""
  if name not in DATASETS:
    raise ConfigError(f'dataset.name={name!r} is not a registered dataset; use one of '
                      f'{", ".join(DATASETS)}.')
  return DATASETS[name]


# ROOT/<split>/<class>/*.jpg|*.png, read by data.image_folder. dataset.image_size chooses the
# family: up to SMALL_MAX_SIDE, CIFAR-10's recipe (pad an eighth of the side, flip), above it
# ImageNet's; both subtract the per-pixel mean of the train split.
IMAGE_FOLDER = 'image_folder'
FOLDER_IMAGE_SIZES = (8, IMAGENET_CROP_SIZES[1])


def folder_spec(image_size: int, num_classes: int, channels: int, splits: dict[str, int],
                prepared_dir: str) -> DatasetSpec:
  """The facts of an image folder of these classes, channels and splits at ``image_size``,
  prepared as a tfds dataset in ``prepared_dir``."""
  small = image_size <= SMALL_MAX_SIDE
  return DatasetSpec(IMAGE_FOLDER, num_classes=num_classes, channels=channels,
                     family=SMALL if small else IMAGENET, image_sizes=FOLDER_IMAGE_SIZES,
                     splits=splits, pad=max(1, image_size // 8) if small else 0, flip=small,
                     prepared_dir=prepared_dir, train_pixel_mean=not small)
