"""configs/imagenet.py:MODEL[,OPTION]: every ImageNet net, its shortcut options, the r50 alias."""

import ml_collections
import pytest

from configs import imagenet, imagenet_r50
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


def test_gradients_are_averaged_in_float32_unless_bfloat16_is_asked_for():
  config = imagenet.get_config('resnet50')
  assert (config.model.dtype, config.gradient_allreduce_dtype) == ('bfloat16', 'float32')
  config.gradient_allreduce_dtype = 'bfloat16'
  config_lib.validate(config, device_count=8, process_count=1)
  config.gradient_allreduce_dtype = 'float16'
  with pytest.raises(config_lib.ConfigError, match="gradient_allreduce_dtype='float16'; use"):
    config_lib.validate(config, device_count=8, process_count=1)
