"""The record order of one streamed data shard: a fresh order every epoch, resumable anywhere.

A shard split of a TFRecord-prepared tfds dataset is a list of pieces, (file, skip, take) each
(``file_instructions``; ImageNet: parts of its 1,024 train files). Epoch e of shard k:

1. the pieces are put in a random order keyed by (seed, k, e);
2. a piece whose first record falls at epoch position [w W, (w + 1) W) joins window w
   (W = ``config.dataset.shuffle_buffer``), so windows are consecutive pieces of about W
   records (at most W plus one piece);
3. each window is read whole (its pieces interleaved with a fixed cycle length) and emitted in
   a uniformly random order keyed by (seed, k, e, w) (``index_shuffle``, a stateless
   bijection);
4. the epoch is the windows in turn, cut at ``per_epoch`` records.

What this guarantees: every record once per epoch (up to the cut); at the scale of pieces the
epochs' orders are independent uniform permutations (so the rank correlation of positions in
consecutive epochs is that of two random permutations of the P pieces, ~N(0, 1/(P - 1))), and
inside a window records are fully shuffled. What it does not: the records of one piece always
share a window, so two records batched together in one epoch meet in a batch again in the next
more often than under independent permutations of all N records: with pieces of r records,
P pieces and batch B, about (B-1)/(W-1) * ((r-1)/(W-1) + W/(r P)) instead of (B-1)/(N-1).
ImageNet on one shard at batch 256 (1,024 files of ~1,250): 1 in ~740 instead of 1 in ~5,000;
with 8 shards, 1.7x random. The alternative, random access to every record (ArrayRecord), would
need the data prepared in another format than the TFRecords most users have.

Resuming at epoch position p computes the window table (cheap: arithmetic on the piece sizes),
never opens the windows before p and reads only the window that holds p, so the time to the
first batch does not depend on p: it reads at most W records plus one piece, plus the records a
piece skips at the start of its file. Every file is read once per epoch. Memory: the window
being emitted plus the next one being read.
"""

import tensorflow as tf
import tensorflow_datasets as tfds

READ_CYCLE = 16  # Files read at once in a window; fixed, since it sets the pre-shuffle order.
_PIECE_ORDER, _WINDOW_ORDER = -1, -2  # Key tags apart from the positions (>= 0) of augmentation.


def fold(key, *data):
  """Folds integers into a stateless-RNG key (int64[2])."""
  for d in data:
    key = tf.random.experimental.stateless_fold_in(key, tf.cast(d, tf.int64))
  return key


def check_tfrecord(builder):
  """Refuses a dataset not stored as TFRecord files, saying how to convert it."""
  # Datasets prepared before tfds recorded a file format are TFRecords.
  file_format = builder.info.file_format or tfds.core.FileFormat.TFRECORD
  if file_format != tfds.core.FileFormat.TFRECORD:
    raise ValueError(
        f'{builder.name} in {builder.data_dir} is stored as {file_format.value}, '
        'and the streamed train input reads TFRecord files (tfds\' default). Convert it with '
        f'`tfds convert_format --dataset_version_dir={builder.data_dir} '
        f'--out_file_format=tfrecord --out_dir=NEW_DIR/{builder.info.full_name}` and point '
        '--config.dataset.data_dir at NEW_DIR, or build it with `--file_format=tfrecord`.')


def pieces(builder, split):
  """(file names, skips, takes) of a split's TFRecord pieces."""
  found = [f for f in builder.info.splits[split].file_instructions if f.take > 0]
  return [f.filename for f in found], [f.skip for f in found], [f.take for f in found]


def _windows(sizes, key, epoch, window):
  """The window table of an epoch: per window (first piece, end piece, first position, size)
  in the piece order; and that order."""
  epoch_key = fold(key, epoch)
  count = tf.shape(sizes, tf.int64)[0]
  order = tf.random.experimental.index_shuffle(
      tf.range(count), fold(epoch_key, _PIECE_ORDER), count - 1)
  ordered = tf.gather(sizes, order)
  starts = tf.cumsum(ordered, exclusive=True)
  _, window_of_piece = tf.unique(starts // window)  # Ascending, so windows are 0, 1, 2, ...
  ids = tf.range(count)
  first = tf.math.segment_min(ids, window_of_piece)
  table = (first, tf.math.segment_max(ids, window_of_piece) + 1, tf.gather(starts, first),
           tf.math.segment_sum(ordered, window_of_piece))
  return table, order


def shard_records(files, key, window, per_epoch, start):
  """(epoch, position in epoch, serialized record) from overall record ``start`` on, forever.

  files: ``pieces`` of the shard; key: the shard's key; window: W; per_epoch: records used per
  epoch (the rest are dropped).
  """
  bound = window + max(files[2])  # Most records a window can hold.
  names, skips, takes = tf.constant(files[0]), *(tf.constant(f, tf.int64) for f in files[1:])
  start_epoch, start_position = divmod(start, per_epoch)

  def epoch_windows(epoch):
    (first, end, begin, size), order = _windows(takes, key, epoch, window)
    skip_to = tf.where(epoch == start_epoch, tf.constant(start_position, tf.int64), 0)
    rows = tf.data.Dataset.from_tensor_slices(
        (tf.range(tf.size(first, tf.int64)), first, end, begin, size))
    rows = rows.filter(lambda w, a, b, s, m: (s + m > skip_to) & (s < per_epoch))
    return rows.map(lambda w, a, b, s, m: (epoch, w, s, tf.maximum(skip_to - s, 0),
                                           tf.minimum(m, per_epoch - s), order[a:b]))

  def read(epoch, w, begin, skip, end, chosen):
    parts = tf.data.Dataset.from_tensor_slices(
        (tf.gather(names, chosen), tf.gather(skips, chosen), tf.gather(takes, chosen)))
    records = parts.interleave(
        lambda name, s, t: tf.data.TFRecordDataset(name).skip(s).take(t),
        cycle_length=READ_CYCLE, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return records.batch(bound).map(lambda r: (epoch, w, begin, skip, end, r))

  def emit(epoch, w, begin, skip, end, records):
    index = tf.range(skip, end)
    shuffled = tf.random.experimental.index_shuffle(
        index, fold(key, epoch, _WINDOW_ORDER, w), tf.shape(records, tf.int64)[0] - 1)
    return tf.data.Dataset.from_tensor_slices(
        (tf.fill(tf.shape(index), epoch), begin + index, tf.gather(records, shuffled)))

  ds = tf.data.Dataset.counter(start_epoch).flat_map(epoch_windows)
  ds = ds.flat_map(read).prefetch(1)  # Reads the next window while this one is used.
  return ds.flat_map(emit)
