"""tfds -> tf.data -> per-process numpy batches of any dataset of the two families of the paper
(He et al. 2015): the SMALL one of digits and CIFAR, the IMAGENET one (``data.registry``).

Determinism. The train batch of global step t is a pure function of (config.seed, t) and the data.
The train split is cut into S data shards (``tfds.even_splits``). In epoch e, shard k is read in an
order fixed by (seed, k, e) and gives ``batch_size // S`` consecutive examples of that order to
every step; the rest of an epoch is dropped. Process p concatenates the sub-batches of its shards
``[p*S/P, (p+1)*S/P)``, so with a fixed ``num_shards`` the global batch does not depend on the
number of processes. Augmentation uses stateless random ops keyed by (seed, shard, epoch,
position). SMALL datasets (digits, CIFAR) sit in memory and are read in a stateless random
order (``index_shuffle``), so a resumed run jumps straight to its step; IMAGENET ones stream their
TFRecord files in a fresh order every epoch, windows of about ``shuffle_buffer`` records each
shuffled whole (``streaming_order``), and a resumed run reads only the window of its position.

Preprocessing (paper, Sec. 3.4 and 4.2). Images are scaled to [0, 1] (ImageNet: on the device),
then:
* digits: 8x8 upsampled bilinearly (half-pixel centres) to ``image_size``; minus the per-pixel
  mean of the train split; augmentation (off by default) is pad 2 + random crop, no flip.
* cifar10 and the other SMALL datasets: minus the per-pixel train mean; augmentation is the
  entry's ``pad`` (zeros, after the mean subtraction; 4 for CIFAR) + random crop of the original
  size + random horizontal flip where the entry's ``flip`` says so; eval sees the original image
  (the ops: ``cifar_preprocessing``).
* imagenet2012 and the other IMAGENET datasets: scale augmentation, random 224 crop, flip and
  PCA lighting for train, the centre crop at shorter side 256 for eval
  (``imagenet_preprocessing``); uint8 pixels plus one RGB offset per image (lighting minus the
  ImageNet mean), scaled and shifted on the device by ``steps.model_images``. The per-pixel mean
  (``dataset.imagenet_per_pixel_mean``, of the dataset's own training images) is the same image
  for every example: ``imagenet_mean_correction`` gives its difference from the per-channel mean
  once, for the device to subtract, so batches stay uint8 plus 3 floats.
Digits are upsampled bilinearly; ImageNet's resizing is bilinear when it enlarges and area
averaging (antialiased) when it shrinks.

TensorFlow is imported at module level only by the data modules (docs/ARCHITECTURE.md, layer 4)
and ``evaluation``; GPUs are hidden from it here.
"""

import dataclasses
import functools
import itertools
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from resnet_jax.config_lib import data_shards
from resnet_jax.data import cifar, imagenet, specs, streamed_order
from resnet_jax.data.streamed_order import fold
from resnet_jax.errors import ConfigError, DatasetNotAvailableError
from resnet_jax.eval_sets import extra_eval_problems, extra_evals, set_problems
from resnet_jax.parallel import sharding

tf.config.set_visible_devices([], 'GPU')  # TF never takes accelerator memory.


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  num_classes: int
  num_train_examples: int  # In config.dataset.train_split.
  num_eval_examples: int  # In config.dataset.eval_split.
  image_shape: tuple[int, int, int]  # (H, W, C) as the model sees it.
  label_names: tuple[str, ...]


# ---------------------------------------------------------------------------------------------
# Builders and split bookkeeping.


def _builder(config, dataset: str | None = None):
  """The prepared tfds builder of ``dataset`` (default: dataset.name) in dataset.data_dir; the
  bundled digits are prepared on the spot."""
  return specs.prepared_builder(specs.spec_of(config, dataset), config.dataset.data_dir)


def _num_examples(builder, split):
  return builder.info.splits[split].num_examples


def get_dataset_info(config) -> DatasetInfo:
  """Sizes, classes and model input shape of config.dataset; cheap, reads only metadata."""
  spec, builder = specs.spec_of(config), _builder(config)
  labels = builder.info.features[spec.label_feature]
  labels = labels.feature if spec.label_sets else labels  # A Sequence of ClassLabels.
  size = config.dataset.image_size
  return DatasetInfo(
      num_classes=labels.num_classes,
      num_train_examples=_num_examples(builder, config.dataset.train_split),
      num_eval_examples=_num_examples(builder, config.dataset.eval_split),
      image_shape=(size, size, spec.channels),
      label_names=tuple(labels.names))


def _class_names(builder, spec) -> list[str]:
  """The class names of a dataset's label feature (of its items, for sets of labels)."""
  feature = builder.info.features[spec.label_feature]
  return getattr(feature, 'feature', feature).names


def check_extra_evals(config) -> None:
  """Refuses, from metadata alone, a set of ``config.extra_evals`` that ``config_lib`` refuses,
  whose dataset is unknown or not prepared or of another label space (``eval_sets.set_problems``,
  on the facts of any tfds dataset), whose split does not exist or is empty, or whose class names
  differ from dataset.name's."""
  problems = extra_eval_problems(config)
  if problems:
    raise ConfigError('Invalid config.extra_evals:\n  ' + '\n  '.join(problems))
  main = specs.spec_of(config)
  classes = _class_names(_builder(config), main)
  for extra in extra_evals(config):
    try:
      spec = specs.spec_of(config, extra.dataset)
      builder = specs.prepared_builder(spec, config.dataset.data_dir)
    except (ConfigError, DatasetNotAvailableError) as error:
      raise type(error)(f"extra_evals entry '{extra}': {error}") from None
    problems = set_problems(config, extra, main, spec)
    if problems:
      raise ConfigError(problems[0])
    try:
      count = _num_examples(builder, extra.split)
    except ValueError as error:  # tfds names the splits there are.
      raise ConfigError(f"extra_evals entry '{extra}': {error} Use tfds split syntax, e.g. "
                        "'test' or 'train[:1000]'.") from None
    if not count:
      raise ConfigError(f"extra_evals entry '{extra}': the split holds no examples.")
    other = _class_names(builder, spec)
    if other != classes:
      differ = [(i, a, b) for i, (a, b) in enumerate(zip(other, classes)) if a != b]
      how = (f'class {differ[0][0]} is {differ[0][1]!r}, not {differ[0][2]!r}' if differ
             else f'{len(other)} classes, not {len(classes)}')
      raise ConfigError(
          f"extra_evals entry '{extra}': {extra.dataset}'s classes are not those of "
          f'{config.dataset.name} ({how}), so its errors would count the wrong labels. '
          'Evaluate a dataset labelled with the same classes in the same order.')


def _num_shards(config, process_count):
  shards = data_shards(config, process_count)
  if shards % process_count or config.batch_size % shards:
    raise ConfigError(
        f'config.dataset.num_shards={shards} data shards must be a multiple of the '
        f'{process_count} processes and divide config.batch_size={config.batch_size}; '
        'set num_shards to 0 (one shard per process) or to such a value.')
  return shards


def _train_shards(config, builder, process_count):
  """The S shard splits of the train split, the per-shard sub-batch and steps per epoch."""
  if not specs.spec_of(config).in_memory:
    streamed_order.check_tfrecord(builder)  # Before any training work.
  splits = tfds.even_splits(config.dataset.train_split, _num_shards(config, process_count))
  sub_batch = config.batch_size // len(splits)
  steps = min(_num_examples(builder, s) for s in splits) // sub_batch
  if not steps:
    raise ConfigError(f'config.batch_size={config.batch_size} exceeds the '
                      f'{config.dataset.train_split!r} split of {config.dataset.name} (per data '
                      'shard); lower batch_size.')
  return splits, sub_batch, steps


def steps_per_epoch(config, *, process_count) -> int:
  """Train steps in one epoch: smallest data shard // (batch_size // num_shards)."""
  return _train_shards(config, _builder(config), process_count)[2]


# ---------------------------------------------------------------------------------------------
# Preprocessing.


def _source(config) -> tuple[str, str, str | None]:
  """What opens dataset.name's builder (``specs.builder_of``), a key of the caches below."""
  spec = specs.spec_of(config)
  return spec.tfds_name, spec.prepared_dir, config.dataset.data_dir


@functools.cache
def _per_pixel_mean(source, label, split, image_size):
  """Per-pixel mean of a split at image_size, float32 in [0, 1] (cached per process)."""
  images, _ = _load_arrays(specs.builder_of(*source), split, label)
  mean = np.mean(images, axis=0, dtype=np.float64).astype(np.float32)
  # Bilinear resizing is linear, so this equals the mean of the resized images.
  return cifar.scale_and_resize(image_size, mean).numpy()


@functools.cache
def _imagenet_pixel_mean(source, label, split, image_size, num_examples):
  """Per-pixel mean in [0, 1] of the first ``num_examples`` images of a split (stored order),
  each cropped as evaluation crops it (cached per process)."""
  builder = specs.builder_of(*source)
  crops = _read(builder, split, label, decode=False).take(num_examples).map(
      lambda image_bytes, _: tf.cast(imagenet.eval_example(image_bytes, image_size),
                                     tf.float64) / 255.0,
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(256)
  total, count = crops.reduce(
      (tf.zeros((image_size, image_size, 3), tf.float64), tf.constant(0, tf.int64)),
      lambda acc, batch: (acc[0] + tf.reduce_sum(batch, 0), acc[1] + tf.shape(batch, tf.int64)[0]))
  return (total / tf.cast(count, tf.float64)).numpy().astype(np.float32)


def imagenet_mean_correction(config) -> np.ndarray | None:
  """What to subtract from an ImageNet input after the per-channel mean: with
  ``dataset.imagenet_per_pixel_mean`` (an image folder of large images: always), the per-pixel
  mean minus the per-channel one (float32 [image_size, image_size, 3]), else None. Train and eval
  batches leave it out; the jitted steps subtract it on the device (``steps.model_images``)."""
  ds, spec = config.dataset, specs.spec_of(config)
  if spec.in_memory or not (ds.imagenet_per_pixel_mean or spec.train_pixel_mean):
    return None
  pixel_mean = _imagenet_pixel_mean(_source(config), spec.label_feature, ds.train_split,
                                    ds.image_size, ds.mean_examples)
  return pixel_mean - np.float32(imagenet.IMAGENET_RGB_MEAN)


def _imagenet_mean_correction(config) -> tf.Tensor:
  """``imagenet_mean_correction`` as a tensor; 0 without the per-pixel mean."""
  correction = imagenet_mean_correction(config)
  return tf.constant(0.0 if correction is None else correction)


def train_mean_image(config) -> np.ndarray:
  """The image subtracted from every input, float32 [H, W, C] as the model sees it.

  SMALL datasets: the per-pixel mean of config.dataset.train_split (computed once per process);
  IMAGENET ones: the per-channel ImageNet RGB mean, or with ``dataset.imagenet_per_pixel_mean``
  (an image folder of large images: always) the per-pixel mean of the dataset's first
  ``dataset.mean_examples`` training images.
  """
  ds, spec = config.dataset, specs.spec_of(config)
  if spec.in_memory:
    _builder(config)  # Prepares digits, refuses an unprepared dataset.
    return _per_pixel_mean(_source(config), spec.label_feature, ds.train_split, ds.image_size)
  shape = (ds.image_size, ds.image_size, 3)
  return (np.broadcast_to(np.float32(imagenet.IMAGENET_RGB_MEAN), shape)
          + _imagenet_mean_correction(config).numpy())


def preprocess_for_eval_numpy(config, images_uint8) -> np.ndarray:
  """Raw uint8 images, exactly as evaluation preprocesses them, as float32 numpy.

  SMALL datasets: a batch [N, h, w, C] or one image [h, w, C] at the dataset's resolution.
  IMAGENET ones: a sequence of [h, w, 3] images of any size -> [N, S, S, 3], S = image_size.
  """
  if specs.spec_of(config).in_memory:
    images = cifar.scale_and_resize(config.dataset.image_size, images_uint8)
    return (images - train_mean_image(config)).numpy()
  size = config.dataset.image_size
  crops = []
  for image in images_uint8:
    y, x, h, w = imagenet.centre_window(np.shape(image), size).numpy()
    crop = imagenet.to_uint8(imagenet.resize(image[y:y + h, x:x + w], (size, size)))
    crops.append(imagenet.normalize(tf.cast(crop, tf.float32))
                 - _imagenet_mean_correction(config))
  return tf.stack(crops).numpy()


# ---------------------------------------------------------------------------------------------
# Reading.


def _deterministic(ds):
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options)


def _read(builder, split, label, *, decode=True):
  """(image, label) records of a split in stored order, the label from the feature ``label``;
  encoded bytes when decode=False."""
  return builder.as_dataset(
      split=split, shuffle_files=False,
      decoders=None if decode else {'image': tfds.decode.SkipDecoding()},
      read_config=tfds.ReadConfig(shuffle_seed=None)).map(
          lambda example: (example['image'], example[label]))


def _load_arrays(builder, split, label):
  """All (uint8 images, int32 labels) of a split, as numpy; the labels of the feature ``label``."""
  examples = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, shuffle_files=False))
  return examples['image'], examples[label].astype(np.int32)


def load_train_arrays(config) -> tuple[np.ndarray, np.ndarray]:
  """The whole train split as float32 [N, H, W, C] (eval preprocessing) and int32 [N] labels.

  For the in-memory (SMALL) datasets: mean subtracted, not augmented.
  """
  spec = specs.spec_of(config)
  if not spec.in_memory:
    raise ValueError(f'{config.dataset.name} is streamed, not held in memory.')
  images, labels = _load_arrays(_builder(config), config.dataset.train_split, spec.label_feature)
  return preprocess_for_eval_numpy(config, images), labels


# ---------------------------------------------------------------------------------------------
# Train batches.


def _in_memory_shard(config, builder, split, key, sub_batch, steps, start_step):
  """Sub-batches of one shard held in memory, read in a stateless random order per epoch."""
  spec, per_epoch = specs.spec_of(config), steps * sub_batch
  images, labels = (tf.constant(a) for a in _load_arrays(builder, split, spec.label_feature))
  mean = tf.constant(train_mean_image(config))

  def example(count):
    epoch, position = count // per_epoch, count % per_epoch
    epoch_key = fold(key, epoch)
    index = tf.random.experimental.index_shuffle(position, epoch_key, len(labels) - 1)
    image = cifar.scale_and_resize(config.dataset.image_size, tf.gather(images, index)) - mean
    if config.dataset.augment:
      image = cifar.pad_crop_flip(image, fold(epoch_key, position), spec.pad, spec.flip)
    return {'image': image, 'label': tf.gather(labels, index)}

  ds = tf.data.Dataset.counter(start_step * sub_batch)
  ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.batch(sub_batch, drop_remainder=True)


def _streaming_shard(config, builder, split, key, sub_batch, steps, start_step):
  """Sub-batches of one streamed shard, in a fresh order every epoch (``streaming_order``)."""
  per_epoch = steps * sub_batch
  records = streamed_order.shard_records(
      streamed_order.pieces(builder, split), key, config.dataset.shuffle_buffer, per_epoch,
      start_step * sub_batch)
  deserialize = functools.partial(builder.info.features.deserialize_example,
                                  decoders={'image': tfds.decode.SkipDecoding()})
  label_feature = specs.spec_of(config).label_feature

  def example(epoch, position, record):
    record = deserialize(record)
    image, offset = imagenet.train_example(record['image'], fold(key, epoch, position),
                                           config.dataset.image_size)
    return {'image': image, 'image_offset': offset,
            'label': tf.cast(record[label_feature], tf.int32)}

  ds = records.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.batch(sub_batch, drop_remainder=True)


def train_batches(config, *, start_step: int, process_index: int,
                  process_count: int) -> Iterator[dict]:
  """This process's part of the train batch of steps start_step, start_step + 1, ... forever.

  Yields {'image': float32 [B, H, W, C], 'label': int32 [B]}, B = batch_size // process_count;
  IMAGENET datasets: uint8 images and their 'image_offset' float32 [B, 3]; the device adds the
  rest (``steps.model_images`` with ``imagenet_mean_correction``).
  """
  builder = _builder(config)
  splits, sub_batch, steps = _train_shards(config, builder, process_count)
  per_process = len(splits) // process_count
  make_shard = _in_memory_shard if specs.spec_of(config).in_memory else _streaming_shard
  seed_key = tf.constant([config.seed, 0], tf.int64)
  shards = tuple(
      make_shard(config, builder, splits[k], fold(seed_key, k), sub_batch, steps, start_step)
      for k in range(process_index * per_process, (process_index + 1) * per_process))
  ds = tf.data.Dataset.zip(shards).map(
      lambda *parts: {f: tf.concat([p[f] for p in parts], 0) for f in parts[0]})
  return _deterministic(ds.prefetch(tf.data.AUTOTUNE)).as_numpy_iterator()


# ---------------------------------------------------------------------------------------------
# Eval batches.


def eval_jpeg_records(config, *, process_index: int,
                      process_count: int) -> tuple[tf.data.Dataset, int]:
  """(encoded image, label) records of this process's part of the eval split, in stored order,
  and their number (IMAGENET datasets; the 10-crop and multi-scale views are cut from them)."""
  builder = _builder(config)
  part = tfds.even_splits(config.dataset.eval_split, process_count)[process_index]
  label = specs.spec_of(config).label_feature
  return _read(builder, part, label, decode=False), _num_examples(builder, part)


@dataclasses.dataclass(frozen=True)
class EvalSplit:
  """This process's part of one eval split, built once and read whole by each iteration: padded,
  masked batches of ``batch_size`` (``eval_batches``), ``num_batches`` on every process."""
  examples: tf.data.Dataset  # Batches of at most batch_size real examples.
  batch_size: int
  num_batches: int

  def __iter__(self) -> Iterator[dict]:
    no_examples = {k: np.zeros((0, *v.shape[1:]), v.dtype.as_numpy_dtype)
                   for k, v in self.examples.element_spec.items()}
    batches = itertools.chain(self.examples.as_numpy_iterator(), itertools.repeat(no_examples))
    return ({**padded, 'mask': mask} for padded, mask in (
        sharding.pad_batch(arrays, self.batch_size)
        for arrays in itertools.islice(batches, self.num_batches)))


def eval_split(config, *, process_index: int, process_count: int, split: str | None = None,
               dataset: str | None = None) -> EvalSplit:
  """This process's part of an eval split (default eval_split) of ``dataset`` (default
  dataset.name; another must share its family), each example exactly once per iteration.

  Batches are {'image', 'label', 'mask': bool [B]} (IMAGENET datasets: uint8 images and
  'image_offset', as ``train_batches``; datasets whose labels are sets of classes: 'label_set',
  bool [B, classes], instead of 'label'), B = eval_batch_size // process_count, preprocessed as
  dataset.name's eval split with its training mean; the tail is padded with masked examples so
  that every process yields the same number of batches.
  """
  if config.eval_batch_size % process_count:
    raise ValueError(f'config.eval_batch_size={config.eval_batch_size} is not divisible by '
                     f'the {process_count} processes.')
  builder = _builder(config, dataset)
  parts = tfds.even_splits(split or config.dataset.eval_split, process_count)
  batch = config.eval_batch_size // process_count
  num_batches = -(-max(_num_examples(builder, p) for p in parts) // batch)
  size, spec = config.dataset.image_size, specs.spec_of(config, dataset)
  if spec.in_memory:
    mean = tf.constant(train_mean_image(config))
    preprocess = lambda image: {
        'image': cifar.scale_and_resize(config.dataset.image_size, image) - mean}
  else:
    eval_offset = -tf.constant(imagenet.IMAGENET_RGB_MEAN)
    preprocess = lambda image_bytes: {'image': imagenet.eval_example(image_bytes, size),
                                      'image_offset': eval_offset}
  if spec.label_sets:
    labels = lambda label: {'label_set': tf.reduce_sum(tf.one_hot(label, spec.num_classes), 0) > 0}
  else:
    labels = lambda label: {'label': tf.cast(label, tf.int32)}
  ds = _read(builder, parts[process_index], spec.label_feature, decode=spec.in_memory).map(
      lambda image, label: {**preprocess(image), **labels(label)},
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return EvalSplit(_deterministic(ds.batch(batch).prefetch(tf.data.AUTOTUNE)), batch, num_batches)


def eval_batches(config, *, process_index: int, process_count: int,
                 split: str | None = None, dataset: str | None = None) -> Iterator[dict]:
  """One pass over ``eval_split(...)``: its padded, masked batches."""
  return iter(eval_split(config, process_index=process_index, process_count=process_count,
                         split=split, dataset=dataset))
