"""A run's data, opened once: the prepared tfds builders of its plan, this process's train batches
and eval splits. What the two preprocessing families share lives here; each family
(``small.SmallDataset``, ``streamed.StreamedDataset``) adds how it reads a shard and preprocesses
an image, and ``datasets.open`` picks one for a plan.

Determinism. The train batch of global step t is a pure function of (config.seed, t) and the data.
The train split is cut into S data shards (``tfds.even_splits``). In epoch e, shard k is read in an
order fixed by (seed, k, e) and gives ``batch_size // S`` consecutive examples of that order to
every step; the rest of an epoch is dropped (the plan's ``steps_per_epoch``). Process p
concatenates the sub-batches of its shards ``[p*S/P, (p+1)*S/P)``, so with a fixed
``num_shards`` the global batch does not depend on the number of processes.

Evaluation reads every example of a split exactly once: this process's part
(``tfds.even_splits(split, P)[p]``) in batches of ``eval_batch_size // P``, the tail padded with
masked examples so that every process yields the same number of batches.

TensorFlow is imported at module level only by the data modules (docs/ARCHITECTURE.md); GPUs are
hidden from it here.
"""

import dataclasses
import functools
import itertools
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from resnet_jax import inference_record
from resnet_jax.data import eval_inputs, specs
from resnet_jax.data.streamed_order import fold
from resnet_jax.errors import ConfigError
from resnet_jax.parallel import sharding

tf.config.set_visible_devices([], 'GPU')  # TF never takes accelerator memory.


@dataclasses.dataclass(frozen=True)
class EvalSplit:
  """This process's part of one eval split, built once and read whole by each iteration: padded,
  masked batches of ``batch_size``, ``num_batches`` on every process."""
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


def deterministic(ds: tf.data.Dataset) -> tf.data.Dataset:
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options)


def read(builder, split, label, *, decode=True) -> tf.data.Dataset:
  """(image, label) records of a split in stored order, the label from the feature ``label``;
  encoded bytes when decode=False."""
  return builder.as_dataset(
      split=split, shuffle_files=False,
      decoders=None if decode else {'image': tfds.decode.SkipDecoding()},
      read_config=tfds.ReadConfig(shuffle_seed=None)).map(
          lambda example: (example['image'], example[label]))


def class_names(builder, spec) -> list[str]:
  """The class names of a dataset's label feature (of its items, for sets of labels)."""
  feature = builder.info.features[spec.label_feature]
  return getattr(feature, 'feature', feature).names


class Dataset:
  """The data of a plan (``run_plan.RunPlan``) as process ``process_index`` reads it."""

  def __init__(self, plan, process_index: int = 0):
    self.plan, self.process_index = plan, process_index
    self.builders = {s.dataset: specs.prepared_builder(s.spec, plan.config.dataset)
                     for s in plan.eval_sets}
    self.builder = self.builders[plan.config.dataset.name]
    self.label_names = tuple(class_names(self.builder, plan.dataset))
    self._check_extra_classes()
    self._eval_splits = {}

  def _check_extra_classes(self) -> None:
    """Refuses an extra eval set whose class names differ from the main dataset's."""
    for eval_set in self.plan.eval_sets[1:]:
      other = class_names(self.builders[eval_set.dataset], eval_set.spec)
      if tuple(other) == self.label_names:
        continue
      differ = [(i, a, b) for i, (a, b) in enumerate(zip(other, self.label_names)) if a != b]
      how = (f'class {differ[0][0]} is {differ[0][1]!r}, not {differ[0][2]!r}' if differ
             else f'{len(other)} classes, not {len(self.label_names)}')
      raise ConfigError(
          f"extra_evals entry '{eval_set.prefix[:-1]}={eval_set.dataset}:{eval_set.split}': "
          f"{eval_set.dataset}'s classes are not those of {self.plan.dataset.name} ({how}), so "
          'its errors would count the wrong labels. Evaluate a dataset labelled with the same '
          'classes in the same order.')

  # ---- Train batches.

  def _shard(self, split: str, key, start_step: int) -> tf.data.Dataset:
    """Sub-batches of one data shard from ``start_step`` on (the family's order and recipe)."""
    raise NotImplementedError

  def train_batches(self, start_step: int) -> Iterator[dict]:
    """This process's part of the train batch of steps start_step, start_step + 1, ... forever:
    ``{'image', 'label'}`` (and the family's extras) of ``plan.process_batch`` examples."""
    plan = self.plan
    splits = tfds.even_splits(plan.config.dataset.train_split, plan.num_shards)
    per_process = plan.num_shards // plan.processes
    seed_key = tf.constant([plan.config.seed, 0], tf.int64)
    first = self.process_index * per_process
    shards = tuple(self._shard(splits[k], fold(seed_key, k), start_step)
                   for k in range(first, first + per_process))
    ds = tf.data.Dataset.zip(shards).map(
        lambda *parts: {f: tf.concat([p[f] for p in parts], 0) for f in parts[0]})
    return deterministic(ds.prefetch(tf.data.AUTOTUNE)).as_numpy_iterator()

  # ---- Evaluation.

  def _eval_preprocessing(self):
    """``image -> {'image', ...}``: an eval image (decoded, or encoded where ``decode_eval`` is
    False) preprocessed inside tf.data, its constants computed here, eagerly."""
    raise NotImplementedError

  decode_eval = True

  def eval_split(self, eval_set=None) -> EvalSplit:
    """This process's part of ``eval_set`` (one of ``plan.eval_sets``; default the main eval
    split), each example exactly once per iteration, preprocessed as the main dataset's eval
    split with its training mean.

    Batches are {'image', 'label', 'mask': bool [B]} and the family's extras (datasets whose
    labels are sets of classes: 'label_set', bool [B, classes], instead of 'label'). Built once
    per set.
    """
    eval_set = eval_set or self.plan.eval_sets[0]
    if eval_set.prefix not in self._eval_splits:
      self._eval_splits[eval_set.prefix] = self._build_eval_split(eval_set)
    return self._eval_splits[eval_set.prefix]

  def _build_eval_split(self, eval_set) -> EvalSplit:
    plan, spec = self.plan, eval_set.spec
    builder = self.builders[eval_set.dataset]
    parts = tfds.even_splits(eval_set.split, plan.processes)
    batch = plan.eval_process_batch
    num_batches = -(-max(builder.info.splits[p].num_examples for p in parts) // batch)
    if spec.label_sets:
      labels = lambda label: {'label_set': tf.reduce_sum(tf.one_hot(label, spec.num_classes),
                                                         0) > 0}
    else:
      labels = lambda label: {'label': tf.cast(label, tf.int32)}
    preprocess = self._eval_preprocessing()
    ds = read(builder, parts[self.process_index], spec.label_feature,
              decode=self.decode_eval).map(
                  lambda image, label: {**preprocess(image), **labels(label)},
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return EvalSplit(deterministic(ds.batch(batch).prefetch(tf.data.AUTOTUNE)), batch,
                     num_batches)

  # ---- What the devices and notebooks need of the preprocessing.

  def mean_correction(self) -> np.ndarray | None:
    """What the jitted steps subtract from a uint8 input after its offset (``steps.model_images``),
    float32 [H, W, C]; None where batches arrive preprocessed."""
    return None

  def train_mean_image(self) -> np.ndarray:
    """The image subtracted from every input, float32 [H, W, C] as the model sees it."""
    raise NotImplementedError

  def inference_record(self) -> inference_record.InferenceRecord:
    """What inference needs of this data once it is gone (``eval_inputs.record_of``)."""
    return self._record

  @functools.cached_property
  def _record(self):  # Built once: preprocess_for_eval reads it for every call.
    return eval_inputs.record_of(self)

  def preprocess_for_eval(self, images) -> np.ndarray:
    """Raw uint8 images, exactly as evaluation preprocesses them, as float32 numpy: a batch
    [N, h, w, C] or a sequence of [h, w, C] images of any size (``eval_inputs``)."""
    return eval_inputs.preprocess(self.inference_record(), images)

  def load_arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All (uint8 images, int32 labels) of a split of the main dataset, as numpy."""
    examples = tfds.as_numpy(self.builder.as_dataset(split=split, batch_size=-1,
                                                     shuffle_files=False))
    return examples['image'], examples[self.plan.dataset.label_feature].astype(np.int32)
