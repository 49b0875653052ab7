"""Split arithmetic from split sizes alone, held to tfds' own (``tfds.core.SplitDict``)."""

import pytest
import tensorflow_datasets as tfds

from resnet_jax.data import splits

SIZES = {'train': 50_000, 'test': 10_000, 'extra': 1_237}
EXPRESSIONS = ['train', 'train[:45000]', 'train[45000:]', 'train[:90%]', 'train[90%:]',
               'train[33%:67%]', 'train+test', 'train[:10]+test[-5:]', 'train[-1%:]',
               'extra[1.5%:]', 'extra[:33%]+train[-7:]', 'all', 'test[:0]', 'extra[12.5%:87.5%]']


def tfds_splits(sizes):
  """tfds' SplitDict of splits of these sizes (one file each)."""
  return tfds.core.SplitDict([
      tfds.core.SplitInfo(name=name, shard_lengths=[count], num_bytes=0,
                          filename_template=tfds.core.ShardedFileTemplate(
                              data_dir='/nowhere', template='{SPLIT}-{SHARD_INDEX}',
                              dataset_name='d', split=name, filetype_suffix='tfrecord'))
      for name, count in sizes.items()])


@pytest.mark.parametrize('expression', EXPRESSIONS)
def test_examples_and_shards_match_tfds(expression):
  reference = tfds_splits(SIZES)
  assert splits.num_examples(expression, SIZES) == reference[expression].num_examples
  for num_shards in (1, 2, 3, 7, 8):
    pieces = [reference[piece].num_examples
              for piece in tfds.even_splits(expression, num_shards)]
    assert splits.smallest_shard(expression, SIZES, num_shards) == min(pieces), num_shards


@pytest.mark.parametrize('expression, problem', [
    ('validation', "it has no split 'validation'"), ('train[:60000]', 'beyond the 50000 examples'),
    ('train[1:2:3]', 'a slice is [from:to]'), ('train[a:]', 'is not a slice bound'),
    ('train[:1.5]', 'a whole number')])
def test_bad_expressions_say_what_is_wrong(expression, problem):
  with pytest.raises(splits.SplitError, match=problem.replace('[', r'\[').replace(']', r'\]')):
    splits.num_examples(expression, SIZES)


def test_names_lists_the_splits_an_expression_reads():
  assert splits.names('train[:45000]+extra') == ['train', 'extra']
