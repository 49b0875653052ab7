"""Evaluates a run's checkpoint, or torchvision weights, in one of the paper's testing modes.

    python -m tools.evaluate --workdir=/runs/resnet50 --mode=ten_crop
    python -m tools.evaluate --workdir=/runs/resnet50 --mode=multi_scale
    python -m tools.evaluate --workdir=/runs/resnet56 --mode=center
    python -m tools.evaluate --workdir=/runs/resnet56 --mode=center --weights=ema
    python -m tools.evaluate --torchvision_checkpoint=resnet50.pth --model=resnet50 \
        --mode=ten_crop --data_dir=~/tensorflow_datasets

The result, {"mode", "step", "weights", "error_top1", "error_top5", "num_examples",
"compiled_shapes"} (errors as fractions), goes to ``<workdir>/eval_<mode>.json``, where
``experiments.report`` picks it up, or to ``--output``. ``--weights=ema`` evaluates the run's
moving average of its weights (``config.ema``) instead of the trained weights, and writes
``<workdir>/eval_<mode>_ema.json``. On several hosts (a TPU pod, a SLURM or Open MPI job;
elsewhere add ``--coordinator_address=HOST:PORT --num_processes=N --process_id=I``), run the same
command on every host: each evaluates its part of the split on its own devices, and process 0
writes the result for all. A torchvision checkpoint (a state dict saved with ``torch.save``, or
an ``.npz`` of the same keys) is converted by ``resnet_jax.torchvision_weights`` and evaluated on
ImageNet's validation split with this project's preprocessing; reading ``.pth`` files needs torch.
"""

import json

import jax
from absl import app, flags

from configs import imagenet
from experiments import sweeps
from resnet_jax import console, ema, errors, evaluation, library_logs, models, torchvision_weights
from resnet_jax.parallel import distributed

FLAGS = flags.FLAGS


def define_flags():
  """The command line flags (defined on demand, so that tests can import this module)."""
  flags.DEFINE_string('workdir', None, 'The run to evaluate.')
  flags.DEFINE_string('torchvision_checkpoint', None, 'A torchvision ResNet state dict (.pth or '
                      '.npz) to evaluate instead of a run.')
  flags.DEFINE_enum('model', None, torchvision_weights.TORCHVISION_NAMES,
                    'The torchvision net of --torchvision_checkpoint.')
  flags.DEFINE_enum('mode', 'center', evaluation.MODES, 'Evaluation mode.')
  flags.DEFINE_integer('step', None, 'Checkpoint step; default the latest.')
  flags.DEFINE_enum('weights', 'raw', ema.WEIGHTS, "The run's trained weights ('raw') or their "
                    "moving average ('ema', kept by runs with config.ema.decay > 0).")
  flags.DEFINE_string('data_dir', None, 'tfds data_dir, if not the one the run was trained with.')
  flags.DEFINE_integer('batch_size', 0, 'Images per call and host for ten_crop (0: '
                       'eval_batch_size // 10, shared by the hosts), rounded up to a multiple of '
                       'the local devices; multi_scale puts as many pixels in a call; with '
                       '--torchvision_checkpoint also the eval_batch_size of center.')
  flags.DEFINE_string('coordinator_address', None, 'host:port of process 0, for multi-host jobs '
                      'on clusters that JAX does not detect by itself.')
  flags.DEFINE_integer('num_processes', None, 'Number of processes (with --coordinator_address).')
  flags.DEFINE_integer('process_id', None, 'This process (with --coordinator_address).')
  flags.DEFINE_string('output', None, 'JSON result path; default <workdir>/eval_<mode>.json.')
  library_logs.define_verbose_flag()
  flags.mark_flags_as_mutual_exclusive(['workdir', 'torchvision_checkpoint'], required=True)


def torchvision_config(name: str, data_dir=None, batch_size: int = 0):
  """The ImageNet eval config for torchvision's ``name``: float32, stride on the 3x3."""
  config = imagenet.imagenet_config(name)
  config.model.update(dtype='float32', bottleneck_stride_on='3x3')
  config.dataset.data_dir = data_dir
  if batch_size:
    config.eval_batch_size = batch_size
  return config


def load_torchvision(path: str, name: str, data_dir=None, batch_size: int = 0):
  """(config, model, variables) of a torchvision checkpoint, for this project's inputs."""
  config = torchvision_config(name, data_dir, batch_size)
  variables = torchvision_weights.from_torchvision(torchvision_weights.read_state_dict(path), name,
                                       input_std=torchvision_weights.TORCHVISION_INPUT_STD)
  return config, models.from_config(config.model, torchvision_weights.NUM_CLASSES), variables


def evaluate_torchvision(path: str, name: str, mode: str, data_dir=None,
                         batch_size: int = 0) -> dict:
  """``protocols.evaluate`` of a torchvision checkpoint; adds 'mode', 'checkpoint', 'step'."""
  from resnet_jax.data import datasets  # pylint: disable=import-outside-toplevel
  from resnet_jax.evaluation import protocols  # pylint: disable=import-outside-toplevel
  config, model, variables = load_torchvision(path, name, data_dir, batch_size)
  plan = datasets.plan_for(config, processes=jax.process_count(), devices=jax.device_count(),
                           training=False)
  return dict(protocols.evaluate(plan, model, variables, mode, batch_size), mode=mode,
              checkpoint=path, step=None)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.torchvision_checkpoint and not FLAGS.model:
    raise app.UsageError('--torchvision_checkpoint needs --model (one of '
                         f'{", ".join(torchvision_weights.TORCHVISION_NAMES)}).')
  if FLAGS.torchvision_checkpoint and FLAGS.weights != 'raw':
    raise app.UsageError('--weights=ema chooses the moving average that a run (--workdir) kept; '
                         'a torchvision checkpoint has only its weights.')
  library_logs.configure(FLAGS.verbose)
  from resnet_jax.evaluation import protocols  # pylint: disable=import-outside-toplevel
  with errors.exit_on_user_error():
    try:
      if FLAGS.workdir:
        result = protocols.evaluate_workdir(FLAGS.workdir, FLAGS.mode, step=FLAGS.step,
                                             data_dir=FLAGS.data_dir,
                                             batch_size=FLAGS.batch_size, weights=FLAGS.weights)
      else:
        result = evaluate_torchvision(FLAGS.torchvision_checkpoint, FLAGS.model, FLAGS.mode,
                                      FLAGS.data_dir, FLAGS.batch_size)
    except errors.USER_ERRORS:
      raise
    except ValueError as error:  # A mode the dataset does not support, or mismatched weights.
      raise app.UsageError(str(error)) from error
  if jax.process_index() != 0:
    return
  named = FLAGS.mode if FLAGS.weights == 'raw' else f'{FLAGS.mode}_{FLAGS.weights}'
  output = FLAGS.output or (FLAGS.workdir and sweeps.eval_result_path(FLAGS.workdir, named))
  if output:
    with open(output, 'w') as f:
      json.dump(result, f, indent=2)
  what = (f'{FLAGS.workdir} at step {result["step"]}' if FLAGS.workdir
          else FLAGS.torchvision_checkpoint)
  if FLAGS.weights == 'ema':
    what = f"the weights' moving average (EMA) of {what}"
  errors_text = console.errors(FLAGS.mode, result['error_top1'], result['error_top5'],
                               result['num_examples'])
  print(f'Evaluated {what}: {errors_text} of {result["num_examples"]} examples '
        f'({result["compiled_shapes"]} input shapes compiled)'
        + (f' -> {output}' if output else '') + '.', flush=True)


def run(argv):
  """The command: joins the other hosts of a multi-host job (if any), then ``main``."""
  distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  main(argv)


if __name__ == '__main__':
  define_flags()
  app.run(run)
