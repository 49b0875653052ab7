"""What the run's console keeps of the libraries' records (library_logs.quiet's filter)."""

import logging

import pytest

from resnet_jax import library_logs

ORBAX = '/venv/site-packages/orbax/checkpoint/checkpoint_manager.py'
TFDS = '/venv/site-packages/tensorflow_datasets/core/dataset_builder.py'
TENSORBOARD = '/venv/site-packages/tensorboard/backend/event_processing/directory_watcher.py'


def record(pathname, level, message):
  return logging.LogRecord('absl', level, pathname, 1, message, None, None)


@pytest.mark.parametrize('pathname, level, message, shown', [
    (ORBAX, logging.INFO, 'Saving checkpoint at step 3', False),
    (TFDS, logging.INFO, 'Reusing dataset digits', False),
    (TENSORBOARD, logging.INFO, 'No path found after /tmp/run/events.out.tfevents.1', False),
    (ORBAX, logging.WARNING, 'CheckpointManagerOptions.read_only=True, setting create=False.', False),
    (ORBAX, logging.WARNING, 'Given directory is read only=/tmp/run/checkpoints', False),
    (ORBAX, logging.WARNING, 'Could not remove an old checkpoint', True),
    (TFDS, logging.WARNING, "Using custom data configuration: BuilderConfig(name='png16-1f')", False),
    (TFDS, logging.WARNING, 'Dataset digits is corrupted', True),
    ('/repo/resnet_jax/train.py', logging.INFO, 'Given directory is read only', True),
])
def test_the_console_drops_library_chatter_and_keeps_their_warnings(pathname, level, message,
                                                                    shown):
  console_filter = library_logs._LibraryInfoFilter()  # pylint: disable=protected-access
  assert console_filter.filter(record(pathname, level, message)) == shown
