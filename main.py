"""Trains and evaluates one run: ``python main.py --config=configs/cifar10.py --workdir=DIR``.

On a TPU pod or a SLURM / Open MPI GPU cluster, run the same command on every host; elsewhere add
``--coordinator_address=HOST:PORT --num_processes=N --process_id=I``.
"""

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, TensorBoard events and config.')
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0, for multi-host jobs '
                    'on clusters that JAX does not detect by itself.')
flags.DEFINE_integer('num_processes', None, 'Number of processes (with --coordinator_address).')
flags.DEFINE_integer('process_id', None, 'This process (with --coordinator_address).')
config_flags.DEFINE_config_file('config', None, 'Experiment config file, e.g. '
                                'configs/cifar10.py:resnet56.', lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # pylint: disable=import-outside-toplevel
  from resnet_jax import distributed, errors, train
  distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  logging.info('Config:\n%s', FLAGS.config)
  with errors.exit_on_user_error():
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)
