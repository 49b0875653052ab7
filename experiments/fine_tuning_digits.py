"""Fine-tuning against training from scratch: ResNet-20 trained on digits 0-4, then on 5-9.

    python -m experiments.fine_tuning_digits --data_dir=/tmp/tfds --output=/tmp/fine_tuning.json

The bundled digits dataset (``configs/digits.py``) is split by class: ResNet-20 first trains on
the training images of digits 0-4 with the digits recipe (16 epochs), and its variables are
exported as ``Run.export`` writes them. Then, for each budget of steps and each seed, two runs
train on the training images of digits 5-9 (relabelled 0-4) with the same recipe scaled to the
budget (lr 0.1, divided by 10 at 50% and 75% of it): one starts from the export through
``init_from`` with the classifier re-initialised (``init_exclude=('fc/.*',)``) and its backbone
at ``--backbone_lr_multiplier`` times the rate, the other from scratch. Both are scored on the
test images of digits 5-9. Classes are selected in memory, on the device-resident input path:
the project's own steps, optimizer and evaluation, without ``main.py`` (which trains on whole
tfds splits).
"""

import json
import os
import tempfile

import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags, logging

from configs import digits
from resnet_jax import config_lib, init_from, notebook, train
from resnet_jax.data import device_resident
from resnet_jax.data import pipeline as input_pipeline
from resnet_jax.evaluation import loop as eval_loop
from resnet_jax.parallel import sharding

FLAGS = flags.FLAGS
PRETRAIN_CLASSES, TARGET_CLASSES = range(5), range(5, 10)


def define_flags():
  flags.DEFINE_string('data_dir', None, 'tfds data_dir for the digits dataset (prepared there).')
  flags.DEFINE_list('budgets', ['25', '50', '100'], 'Train steps of each fine-tuning run.')
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds of the runs on digits 5-9.')
  flags.DEFINE_float('backbone_lr_multiplier', 1.0, 'The fine-tuned runs\' backbone rate, as a '
                     'multiple of the classifier\'s (optimizer.backbone_lr_multiplier).')
  flags.DEFINE_string('output', None, 'Where to write the figures as JSON.')


def subset(images, labels, classes):
  """The examples of ``classes``, relabelled 0, 1, ... in their order."""
  keep = np.isin(labels, classes)
  return images[keep], (labels[keep] - classes[0]).astype(np.int32)


def splits(config):
  """{'train', 'test'}: (float32 images as the model sees them, int32 labels) of every digit."""
  train_split = input_pipeline.load_train_arrays(config)
  images, labels = tfds.as_numpy(tfds.builder('digits', data_dir=config.dataset.data_dir)
                                 .as_dataset(split='test', batch_size=-1, as_supervised=True))
  return {'train': train_split,
          'test': (input_pipeline.preprocess_for_eval_numpy(config, images), labels)}


def recipe(data_dir: str, seed: int, steps: int):
  """The digits recipe for a run of ``steps`` steps: lr 0.1, /10 at 50% and 75% of them."""
  config = digits.get_config()
  config.dataset.data_dir = data_dir
  config.seed = seed
  config.total_steps, config.total_epochs = steps, None
  config.optimizer.update(lr_boundaries=(steps // 2, 3 * steps // 4), lr_boundaries_unit='steps')
  return config


def train_and_score(config, data, num_steps: int) -> tuple[dict, dict]:
  """``(variables, test metrics)`` after ``num_steps`` steps of ``config`` on ``data['train']``,
  from a fresh init or from the weights that ``config.init_from`` names."""
  images, labels = data['train']
  steps_per_epoch = len(labels) // config.batch_size
  program = train.build_program(config, images.shape[1:], int(labels.max()) + 1,
                                steps_per_epoch)
  train_fn = device_resident.make_train_fn(
      program.train_step, device_resident.put_on_devices(images, labels, program.mesh),
      program.mesh, seed=config.seed, batch_size=config.batch_size,
      steps_per_epoch=steps_per_epoch, pad=0, flip=False)  # The digits recipe: no augmentation.
  test_images, test_labels = data['test']
  batch, mask = sharding.pad_batch({'image': test_images, 'label': test_labels},
                                   config.eval_batch_size)
  state = program.init(jax.random.key(config.seed))
  if config.init_from:
    plan = init_from.load(config, jax.eval_shape(lambda: state.variables))
    state = program.start(init_from.apply(plan, state.variables, program.replicated))
  for _ in range(num_steps):
    state, _ = train_fn(state, 1)
  metrics = eval_loop.evaluate(program.eval_fn, state.variables, iter([{**batch, 'mask': mask}]),
                               program.batch_sharding)
  return state.variables, {k.removeprefix('eval_'): v for k, v in metrics.items()}


def main(argv):
  del argv
  base = recipe(FLAGS.data_dir, seed=0, steps=1)
  data = splits(base)
  by_classes = lambda classes: {name: subset(*split, np.asarray(classes))
                                for name, split in data.items()}
  source, target = by_classes(PRETRAIN_CLASSES), by_classes(TARGET_CLASSES)
  pretrain_steps = 16 * (len(source['train'][1]) // base.batch_size)  # 16 epochs.
  pretrain = recipe(FLAGS.data_dir, 0, pretrain_steps)
  variables, pretrained = train_and_score(pretrain, source, pretrain_steps)
  logging.info('Digits 0-4 after %d steps: test top-1 error %.4f.', pretrain_steps,
               pretrained['error_top1'])
  exported = os.path.join(tempfile.mkdtemp(), 'digits_0_4.msgpack')
  model = config_lib.build_model(pretrain, len(PRETRAIN_CLASSES))
  notebook.Run(workdir='', config=pretrain, model=model, variables=variables,
               step=pretrain_steps).export(exported)
  results = {'pretrain': {'steps': pretrain_steps, **pretrained},
             'backbone_lr_multiplier': FLAGS.backbone_lr_multiplier, 'runs': []}
  for steps in map(int, FLAGS.budgets):
    for seed in map(int, FLAGS.seeds):
      scratch = recipe(FLAGS.data_dir, seed, steps)
      tuned = scratch.copy_and_resolve_references()
      tuned.update(init_from=exported, init_exclude=('fc/.*',))
      tuned.optimizer.backbone_lr_multiplier = FLAGS.backbone_lr_multiplier
      figures = {'steps': steps, 'seed': seed,
                 'fine_tuned': train_and_score(tuned, target, steps)[1],
                 'scratch': train_and_score(scratch, target, steps)[1]}
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
