"""configs/imagenet.py:MODEL[,OPTION]: every ImageNet net, its shortcut options, the r50 alias."""

import ml_collections
import pytest

from configs import digits, imagenet, imagenet_r50
from resnet_jax import config_lib


def test_every_imagenet_net_has_a_valid_config():
  assert set(imagenet.MODELS) == {'resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152',
                                  'plain18', 'plain34'}
  for model in imagenet.MODELS:
    config = imagenet.get_config(model)
    assert (config.model.name, config.dataset.name, config.model.shortcut) == (
        model, 'imagenet2012', None)
    config_lib.validate(config, device_count=8, process_count=1)


def test_the_option_picks_the_shortcut_of_table_3():
  for option in 'ABC':
    assert imagenet.get_config(f'resnet34,{option}').model.shortcut == option
  assert imagenet_r50.get_config('C').model.shortcut == 'C'


def test_plateau_option_is_the_papers_schedule():
  config = imagenet.get_config('resnet34,C,plateau')
  assert (config.optimizer.schedule, config.total_epochs, config.model.shortcut) == (
      'plateau', 120.0, 'C')
  # 60x10^4 iterations of 256 images are 120 epochs of ImageNet's 1,281,167 training images.
  assert round(60e4 * 256 / 1_281_167) == 120
  config_lib.validate(config, device_count=8, process_count=1)


def test_imagenet_r50_is_an_alias_of_imagenet_resnet50():
  assert imagenet_r50.get_config().to_dict() == imagenet.get_config('resnet50').to_dict()


@pytest.mark.parametrize('arg, message', [
    ('resnet20', "'resnet20' is not an ImageNet net; use one of resnet18, .*plain34"),
    ('resnet50,D', r"options \['D'\] not understood"),
    ('resnet50,A,B', r"options \['A', 'B'\] not understood.*any of plateau"),
])
def test_bad_arguments_say_what_is_valid(arg, message):
  with pytest.raises(ValueError, match=message):
    imagenet.get_config(arg)


def test_a_workdir_of_the_other_schedule_is_another_experiment():
  steps_config = imagenet.get_config('resnet50')
  older = steps_config.to_dict()
  del older['optimizer']['schedule']  # Saved before the field existed: the step schedule.
  fields = config_lib.IDENTITY_FIELDS
  assert config_lib.changed_fields(ml_collections.ConfigDict(older), steps_config, fields) == []
  assert config_lib.changed_fields(ml_collections.ConfigDict(older),
                                   imagenet.get_config('resnet50,plateau'), fields) == [
                                       "optimizer.schedule: 'steps' -> 'plateau'"]


@pytest.mark.parametrize('batch, steps_per_epoch', [(256, 5004), (4096, 312)])
def test_plateau_patience_and_evaluations_count_epochs_at_every_batch(batch, steps_per_epoch):
  config = imagenet.get_config('resnet50,plateau')
  config.batch_size = batch
  assert 1_281_167 // batch == steps_per_epoch
  every = config_lib.intervals(config, steps_per_epoch)
  # By hand: an evaluation and a checkpoint each epoch; a patience of 5 epochs is 5 of them.
  assert (every.eval_steps, every.checkpoint_steps, every.plateau_patience) == (
      steps_per_epoch, steps_per_epoch, 5)
  assert every.plateau_patience * every.eval_steps / steps_per_epoch == 5.0
  # Evaluations every 2 epochs: 3 of them (6 epochs) are the first to cover 5 epochs.
  config.eval_every_epochs = 2.0
  every = config_lib.intervals(config, steps_per_epoch)
  assert (every.eval_steps, every.plateau_patience) == (2 * steps_per_epoch, 3)
  config.optimizer.plateau_patience_epochs = 0.5  # At least one evaluation.
  assert config_lib.intervals(config, steps_per_epoch).plateau_patience == 1


def test_step_intervals_and_patience_stay_as_given():
  config = digits.get_config()
  config.optimizer.plateau_patience = 7
  assert config_lib.intervals(config, 23) == config_lib.Intervals(
      eval_steps=92, checkpoint_steps=92, plateau_patience=7)


@pytest.mark.parametrize('overrides, message', [
    ({'eval_every_steps': 100}, 'exactly one of eval_every_steps and eval_every_epochs'),
    ({'checkpoint_every_epochs': 0.0}, 'exactly one of checkpoint_every_steps and'),
    ({'optimizer.schedule': 'plateau', 'optimizer.plateau_patience': 3},
     'exactly one of optimizer.plateau_patience and optimizer.plateau_patience_epochs'),
    ({'eval_every_epochs': -1.0}, 'must not be negative'),
])
def test_validate_refuses_an_interval_in_both_or_neither_unit(overrides, message):
  config = imagenet.get_config('resnet50')
  for key, value in overrides.items():
    *parents, field = key.split('.')
    (config.optimizer if parents else config)[field] = value
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(config, device_count=8, process_count=1)
