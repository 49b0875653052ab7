"""Fine-tuning against training from scratch: ResNet-20 trained on a folder of digits 0-4, then
on a folder of digits 5-9.

    python -m experiments.fine_tuning_digits --root=/tmp/fine_tuning --output=/tmp/fine_tuning.json

Two image folders are written from the bundled digits (``testing.image_folders.write_digits``,
split as the bundled dataset splits them): ``ROOT/digits_0_4`` and ``ROOT/digits_5_9``, whose
class folders '5' to '9' are its labels 0 to 4. Every run is ``dataset.name=image_folder`` with
``configs/digits.py``'s recipe, trained as ``main.py`` trains (``train.train_and_evaluate``):

* the source: 16 epochs on digits 0-4, in ``ROOT/runs/source``;
* for each budget of steps and each seed, on digits 5-9 with lr 0.1 divided by 10 at 50% and
  75% of the budget: one run from the source's workdir (``init_from``; both folders have five
  classes, so ``init_exclude=('fc/.*',)`` re-initialises the classifier), its backbone at
  ``--backbone_lr_multiplier`` times the rate, and one from scratch, in
  ``ROOT/runs/<steps>/seed<k>/{fine_tuned_backbone<multiplier>x,scratch}``.

Each run is scored by its own final evaluation, on the test images of its folder. A finished run
is not trained again, so an interrupted study resumes.
"""

import json
import os

from absl import app, flags, logging

from configs import digits
from resnet_jax import events, library_logs, train
from resnet_jax.testing import image_folders

FLAGS = flags.FLAGS
SOURCE_CLASSES, TARGET_CLASSES = range(5), range(5, 10)


def define_flags():
  flags.DEFINE_string('root', None, 'Where the folders and the runs go.', required=True)
  flags.DEFINE_list('budgets', ['25', '50', '100'], 'Train steps of each run on digits 5-9.')
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds of the runs on digits 5-9.')
  flags.DEFINE_float('backbone_lr_multiplier', 1.0, "The fine-tuned runs' backbone rate, as a "
                     "multiple of the classifier's (optimizer.backbone_lr_multiplier).")
  flags.DEFINE_string('output', None, 'Where to write the figures as JSON.')


def folder(name: str, classes) -> str:
  """The image folder ``ROOT/name`` of ``classes``, written once."""
  path = os.path.join(FLAGS.root, name)
  if not os.path.isdir(path):
    image_folders.write_digits(path, classes=classes)
  return path


def digits_run(data_dir: str, seed: int, steps: int | None = None):
  """``configs/digits.py`` on the folder ``data_dir``; with ``steps``, a run of that many steps,
  lr /10 at 50% and 75% of them, evaluated and checkpointed at its end."""
  config = digits.get_config()
  config.dataset.update(name='image_folder', data_dir=data_dir)
  config.seed = seed
  if steps:
    config.total_steps, config.total_epochs = steps, None
    config.optimizer.update(lr_boundaries=(steps // 2, 3 * steps // 4),
                            lr_boundaries_unit='steps')
    config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = steps
  return config


def trained(config, workdir: str) -> dict:
  """Trains ``config`` in ``workdir`` (resumed, or nothing left to do, where it has run) and
  returns its final evaluation: {'step', 'error_top1', 'error_top5', 'loss'}."""
  train.train_and_evaluate(config, workdir)
  scalars = events.read_scalars(workdir)
  steps, _ = scalars['eval_error_top1']
  last = {name: float(scalars[f'eval_{name}'][1][-1]) for name in ('error_top1', 'error_top5',
                                                                   'loss')}
  return {'step': int(steps[-1]), **last}


def main(argv):
  del argv
  library_logs.use_cpu_without_accelerators()
  source_folder, target_folder = folder('digits_0_4', SOURCE_CLASSES), folder('digits_5_9',
                                                                             TARGET_CLASSES)
  runs = os.path.join(FLAGS.root, 'runs')
  source = os.path.join(runs, 'source')
  results = {'source': trained(digits_run(source_folder, seed=0), source),
             'backbone_lr_multiplier': FLAGS.backbone_lr_multiplier, 'runs': []}
  logging.info('Digits 0-4: %s', results['source'])
  for steps in map(int, FLAGS.budgets):
    for seed in map(int, FLAGS.seeds):
      scratch = digits_run(target_folder, seed, steps)
      tuned = scratch.copy_and_resolve_references()
      tuned.update(init_from=source, init_exclude=('fc/.*',))
      tuned.optimizer.backbone_lr_multiplier = FLAGS.backbone_lr_multiplier
      here = os.path.join(runs, str(steps), f'seed{seed}')
      figures = {'steps': steps, 'seed': seed,
                 'fine_tuned': trained(tuned, os.path.join(
                     here, f'fine_tuned_backbone{FLAGS.backbone_lr_multiplier:g}x')),
                 'scratch': trained(scratch, os.path.join(here, 'scratch'))}
      logging.info('%s', figures)
      results['runs'].append(figures)
  text = json.dumps(results, indent=2)
  print(text)
  if FLAGS.output:
    with open(FLAGS.output, 'w') as f:
      f.write(text)


if __name__ == '__main__':
  define_flags()
  app.run(main)
