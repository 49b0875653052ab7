"""The streamed ImageNet order on a real TFRecord-prepared imagenet2012 (``tfrecord_imagenet``).

950 tiny JPEGs in 190 files of 5; each record's label is its index in the split, so the labels
of the train batches name the records read.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import imagenet
from resnet_jax import errors
from resnet_jax.data import datasets, streamed_order
from resnet_jax.testing import tfrecord_imagenet
from tests.harness import plan_of

NUM_RECORDS, NUM_FILES = 950, 190
WINDOW = 40  # Records per window: 8 files.


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  tfrecord_imagenet.prepare(
      data_dir, {'train': (tfrecord_imagenet.tiny_jpegs(NUM_RECORDS, size=8), range(NUM_RECORDS))},
      NUM_FILES)
  return data_dir


def config_for(data_dir, batch_size, num_shards):
  config = imagenet.get_config('resnet18')
  config.model.bn_group_size = 0  # Global BatchNorm: the batches here are small.
  config.dataset.update(data_dir=data_dir, image_size=32, shuffle_buffer=WINDOW,
                        num_shards=num_shards, eval_split='train')
  config.batch_size = batch_size
  return config


@pytest.fixture(scope='module')
def nine_epochs(data_dir):
  return epoch_positions(data_dir, epochs=9)


def epoch_positions(data_dir, epochs):
  """order[e][i]: the record at position i of epoch e of the only shard; positions[e][r]: where
  record r comes in epoch e."""
  builder = tfds.builder('imagenet2012', data_dir=data_dir)
  records = streamed_order.shard_records(
      streamed_order.pieces(builder, 'train'), tf.constant([0, 0], tf.int64), WINDOW,
      NUM_RECORDS, 0)
  labels = records.take(epochs * NUM_RECORDS).map(
      lambda epoch, position, record: builder.info.features.deserialize_example(
          record, decoders={'image': tfds.decode.SkipDecoding()})['label'])
  order = np.fromiter(labels.as_numpy_iterator(), np.int64).reshape(epochs, NUM_RECORDS)
  positions = np.empty_like(order)
  for e in range(epochs):
    positions[e, order[e]] = np.arange(NUM_RECORDS)
  return order, positions


def spearman(a, b):
  """Spearman's rank correlation of two permutations of 0..n-1 (they are their own ranks)."""
  return np.corrcoef(a, b)[0, 1]


def test_every_epoch_is_a_fresh_permutation_unrelated_to_the_last(data_dir, nine_epochs):
  """Spearman's rho of each record's position in epoch e against epoch e + 1.

  Under two independent uniform permutations of n records rho has mean 0 and variance
  1 / (n - 1). Here the pieces (files) are what is permuted independently per epoch and records
  are shuffled only inside windows of 8 files, so rho behaves as between two random permutations
  of the P = 190 files: mean 0, standard deviation about 1 / sqrt(P - 1) = 0.073. Each of 8
  consecutive pairs must lie within 4 such deviations, and their mean within 4 / sqrt(8). The
  previous order (the files in stored order every epoch through a 40-record shuffle buffer),
  computed here with tf.data, gives rho above 0.9 and fails the bound.
  """
  order, positions = nine_epochs
  for e in range(9):  # Every record exactly once per epoch.
    np.testing.assert_array_equal(np.sort(order[e]), np.arange(NUM_RECORDS))
  sd = 1 / np.sqrt(NUM_FILES - 1)
  rhos = [spearman(positions[e], positions[e + 1]) for e in range(8)]
  assert max(np.abs(rhos)) < 4 * sd, rhos
  assert abs(np.mean(rhos)) < 4 * sd / np.sqrt(8), rhos

  files = tfds.builder('imagenet2012', data_dir=data_dir).info.splits['train'].file_instructions
  stored = tf.data.TFRecordDataset([f.filename for f in files]).enumerate().map(lambda i, _: i)
  old = [np.fromiter(stored.shuffle(WINDOW, seed=seed).as_numpy_iterator(), np.int64)
         for seed in (0, 1)]
  old_positions = [np.argsort(o) for o in old]
  assert spearman(*old_positions) > 0.9


def test_records_batched_together_meet_again_as_often_as_windows_of_files_predict(nine_epochs):
  """How often two records in one batch (8 consecutive positions) of epoch e share a batch again
  in epoch e + 1: what the window design does not randomise.

  Under two independent random permutations a pair meets again with probability 7 / 949. Here
  windows are 8 whole files of 5 records (40 records, 5 batches): a pair meets again only if
  its records share a window in epoch e + 1, which is certain for two records of the same file
  and has probability 7 / 189 otherwise; inside the window the batch is uniform, 7 / 39. The
  count over 8 epoch pairs must match that expectation within 4 Poisson deviations, and is
  about 3x what independent permutations give: the price of reading whole files.
  """
  order, positions = nine_epochs
  meet, expected = 0, 0.0
  first, second = np.triu_indices(8, 1)
  for e in range(8):
    batches = order[e][:NUM_RECORDS // 8 * 8].reshape(-1, 8)
    a, b = batches[:, first].ravel(), batches[:, second].ravel()
    meet += int(np.sum(positions[e + 1][a] // 8 == positions[e + 1][b] // 8))
    same_file = a // 5 == b // 5  # Files hold records 5f..5f+4 in stored order.
    expected += 7 / 39 * np.sum(np.where(same_file, 1.0, 7 / 189))
  random_permutations = 8 * len(first) * (NUM_RECORDS // 8) * 7 / 949
  assert abs(meet - expected) < 4 * np.sqrt(expected), (meet, expected)
  assert 2 * random_permutations < expected < 5 * random_permutations


def test_one_two_and_four_processes_read_the_same_global_batches(data_dir):
  # 950 records in 4 data shards of 238, 238, 237 and 237: shard splits cut files (tfds skips);
  # steps 116..119 cross the end of epoch 0 (237 // 2 = 118 steps).
  config = config_for(data_dir, batch_size=8, num_shards=4)
  assert datasets.open_config(config).plan.steps_per_epoch == 118
  global_batches = {}
  for count in (1, 2, 4):
    parts = [datasets.open_config(config, processes=count, process_index=p).train_batches(116)
             for p in range(count)]
    global_batches[count] = [
        {k: np.concatenate([b[k] for b in step]) for k in step[0]}
        for step in zip(*[[next(it) for _ in range(4)] for it in parts])]
  for count in (2, 4):
    for one, many in zip(global_batches[1], global_batches[count]):
      for k in one:
        np.testing.assert_array_equal(one[k], many[k])


def test_resume_anywhere_equals_the_uninterrupted_run_and_an_epoch_is_a_permutation(data_dir):
  # One record per step from 'train[3:]' (its first piece skips 3 records of a file): an epoch
  # is 947 steps, every record of the split once.
  config = config_for(data_dir, batch_size=1, num_shards=1)
  config.dataset.train_split = 'train[3:]'
  data = datasets.open_config(config)
  steps = data.plan.steps_per_epoch
  assert steps == NUM_RECORDS - 3
  run = data.train_batches(0)
  uninterrupted = [next(run) for _ in range(steps + 60)]
  epoch = [int(b['label'][0]) for b in uninterrupted[:steps]]
  assert sorted(epoch) == list(range(3, NUM_RECORDS))

  # Where shard 0's windows start in epochs 0 and 1 (its key: the seed, then shard index 0).
  builder = tfds.builder('imagenet2012', data_dir=data_dir)
  shard_key = streamed_order.fold(tf.constant([config.seed, 0], tf.int64), 0)
  takes = tf.constant(streamed_order.pieces(builder, 'train[3:]')[2], tf.int64)
  starts = [streamed_order._windows(takes, shard_key, e, WINDOW)[0][2].numpy()  # pylint: disable=protected-access
            for e in (0, 1)]
  assert 0 < starts[1][1] < 60
  for step in (int(starts[0][5]), int(starts[0][5]) - 1, int(starts[0][5]) + 17, steps - 1,
               steps + int(starts[1][1]), steps + 33):  # Window starts and ends, mid-window,
    # ... the end of an epoch, a later epoch.
    resumed = next(datasets.open_config(config).train_batches(step))
    for k in resumed:
      np.testing.assert_array_equal(resumed[k], uninterrupted[step][k], err_msg=f'step {step}')


def test_a_dataset_not_in_tfrecord_files_is_refused_with_the_conversion_command(tmp_path):
  tfrecord_imagenet.prepare(str(tmp_path), {'train': (tfrecord_imagenet.tiny_jpegs(4), range(4))},
                            num_files=1, file_format='array_record')
  with pytest.raises(ValueError, match='stored as array_record.*tfds convert_format'):
    # What train_and_evaluate does before it builds the model: it opens the data.
    datasets.open_config(config_for(str(tmp_path), batch_size=2, num_shards=1))


def test_a_window_below_one_record_is_refused():
  config = imagenet.get_config('resnet18')
  config.model.bn_group_size = 0  # Global BatchNorm: the batches here are small.
  config.dataset.shuffle_buffer = 0
  with pytest.raises(errors.ConfigError, match='shuffle_buffer=0 must be at least 1'):
    plan_of(config, devices=1, processes=1)
