"""Evaluates a run's checkpoint in one of the paper's testing modes; writes eval_<mode>.json.

    python -m experiments.evaluate --workdir=/runs/resnet50 --mode=ten_crop
    python -m experiments.evaluate --workdir=/runs/resnet50 --mode=multi_scale
    python -m experiments.evaluate --workdir=/runs/resnet56 --mode=center

The result, {"mode", "step", "error_top1", "error_top5", "num_examples"} (errors as fractions),
goes to ``<workdir>/eval_<mode>.json``, where ``experiments.report`` picks it up.
"""

import json

from absl import app, flags

from experiments import sweeps
from resnet_jax import errors, evaluation

FLAGS = flags.FLAGS


def define_flags():
  """The command line flags (defined on demand, so that tests can import this module)."""
  flags.DEFINE_string('workdir', None, 'The run to evaluate.')
  flags.DEFINE_enum('mode', 'center', evaluation.MODES, 'Evaluation mode.')
  flags.DEFINE_integer('step', None, 'Checkpoint step; default the latest.')
  flags.DEFINE_string('data_dir', None, 'tfds data_dir, if not the one the run was trained with.')
  flags.DEFINE_integer('batch_size', 0, 'Images per call for ten_crop (0: eval_batch_size // 10).')
  flags.mark_flag_as_required('workdir')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  with errors.exit_on_user_error():
    try:
      result = evaluation.evaluate_workdir(FLAGS.workdir, FLAGS.mode, step=FLAGS.step,
                                           data_dir=FLAGS.data_dir, batch_size=FLAGS.batch_size)
    except errors.USER_ERRORS:
      raise
    except ValueError as error:  # A mode that the run's dataset does not support.
      raise app.UsageError(str(error)) from error
  with open(sweeps.eval_result_path(FLAGS.workdir, FLAGS.mode), 'w') as f:
    json.dump(result, f, indent=2)
  print(f'{FLAGS.mode} at step {result["step"]}: top-1 error {100 * result["error_top1"]:.2f}%, '
        f'top-5 error {100 * result["error_top5"]:.2f}% over {result["num_examples"]} examples.')


if __name__ == '__main__':
  define_flags()
  app.run(main)
