"""Trains or evaluates one run: ``python main.py --config=configs/cifar10.py --workdir=DIR``.

``--mode=eval`` evaluates the latest checkpoint in DIR on its eval split without training, with
the config saved in DIR (``--config``, if given, replaces it and must describe the same network).

On a TPU pod or a SLURM / Open MPI GPU cluster, run the same command on every host; elsewhere add
``--coordinator_address=HOST:PORT --num_processes=N --process_id=I``.
"""

from absl import app, flags
from ml_collections import config_flags

from resnet_jax import library_logs

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, TensorBoard events and config.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval'], 'train: train the run in --workdir (or '
                  'resume it); eval: evaluate its latest checkpoint, in this process only.')
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0, for multi-host jobs '
                    'on clusters that JAX does not detect by itself.')
flags.DEFINE_integer('num_processes', None, 'Number of processes (with --coordinator_address).')
flags.DEFINE_integer('process_id', None, 'This process (with --coordinator_address).')
config_flags.DEFINE_config_file('config', None, 'Experiment config file, e.g. '
                                'configs/cifar10.py:resnet56; optional with --mode=eval.',
                                lock_config=True)
library_logs.define_verbose_flag()
flags.mark_flags_as_required(['workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.mode == 'train' and FLAGS.config is None:
    raise app.UsageError('--config is required to train.')
  # pylint: disable=import-outside-toplevel
  library_logs.configure(FLAGS.verbose)
  from resnet_jax import errors, notebook, train
  from resnet_jax.parallel import distributed
  with errors.exit_on_user_error():
    if FLAGS.mode == 'eval':
      notebook.evaluate_latest(FLAGS.workdir, FLAGS.config)
      return
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


def parse_flags(argv):
  """absl's parsing, plus a one-line error for a mistyped ``--config.field`` override."""
  try:
    return app.parse_flags_with_usage(argv)
  except (KeyError, AttributeError) as error:
    message = error.args[0]
    while isinstance(message, BaseException):  # absl wraps ml_collections' KeyError.
      message = message.args[0]
    raise SystemExit(f'Invalid --config override: {message}') from None


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
