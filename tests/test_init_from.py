"""Runs started from trained weights (``config.init_from``): a workdir, an exported msgpack file,
torchvision's state dict; the backbone's own rate and frozen BatchNorm statistics.

One tiny digits run (seed 1, two steps) is the source of every test that needs a workdir.
"""

import dataclasses
import json
import logging
import os
import shutil

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
import torch

import resnet_jax
from benchmarks.torch_input import import_torchvision
from configs import transfer
from resnet_jax import (
  checkpointing,
  errors,
  init_from,
  models,
  optim,
  train,
  workdirs,
)
from resnet_jax import torchvision_weights as tv_weights
from resnet_jax.parallel import sharding
from resnet_jax.testing import image_folders, weight_files
from tests.harness import rate_of, run_main, tiny_digits_config, tiny_digits_flags

# ResNet-20's variables: the stem's kernel and BatchNorm (scale, bias, mean, var), 9 blocks of two
# kernels and two BatchNorms, the classifier's kernel and bias.
RESNET20_VARIABLES = 1 + 4 + 9 * (2 + 2 * 4) + 2
CLASSIFIER = ('params/fc/bias', 'params/fc/kernel')


def flat(variables) -> dict:
  return {k: np.asarray(v) for k, v in
          flax.traverse_util.flatten_dict(jax.device_get(variables), sep='/').items()}


def checkpoint(workdir, step):
  return flat(checkpointing.restore_variables(workdir, step)[0])


def assert_same_bits(got: dict, want: dict, keys):
  for key in keys:
    assert got[key].dtype == want[key].dtype and np.array_equal(got[key], want[key]), key


@pytest.fixture(scope='module')
def source(data_dir, tmp_path_factory):
  """A digits run of two steps from seed 1: its workdir and the variables of its checkpoint."""
  workdir = str(tmp_path_factory.mktemp('source'))
  train.train_and_evaluate(tiny_digits_config(
      data_dir, seed=1, total_steps=2, eval_every_steps=2, checkpoint_every_steps=2), workdir)
  return workdir, checkpoint(workdir, 2)


def read_items(workdir, step):
  """The ``progress`` and the leaves of the ``opt_state`` item of a checkpoint, read by orbax
  onto this process's first device."""
  manager = ocp.CheckpointManager(
      checkpointing.checkpoint_dir(workdir), options=ocp.CheckpointManagerOptions(read_only=True),
      item_handlers={'progress': ocp.JsonCheckpointHandler(),
                     'opt_state': ocp.StandardCheckpointHandler()})
  here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=here),
                        manager.item_metadata(step)['opt_state'])
  items = manager.restore(step, args=ocp.args.Composite(
      progress=ocp.args.JsonRestore(), opt_state=ocp.args.StandardRestore(target)))
  manager.close()
  return items['progress'], jax.tree.leaves(items['opt_state'])


def test_a_workdir_starts_a_run_bit_for_bit_and_a_restart_never_reads_it_again(
    source, data_dir, tmp_path, caplog):
  source_dir, source_variables = source
  copy, workdir = str(tmp_path / 'source'), str(tmp_path / 'run')
  shutil.copytree(source_dir, copy)
  with caplog.at_level(logging.INFO):
    train.train_and_evaluate(tiny_digits_config(data_dir, total_steps=1, init_from=copy),
                             workdir)
  assert (f'init_from: loaded {RESNET20_VARIABLES} of the {RESNET20_VARIABLES} variables '
          f'(params and batch_stats) from {copy} (its checkpoint of step 2)') in caplog.text
  assert sorted(os.listdir(checkpointing.checkpoint_dir(workdir))) == ['0', '1']
  start = checkpoint(workdir, 0)
  assert len(start) == RESNET20_VARIABLES
  assert_same_bits(start, source_variables, source_variables)
  # Step, data position and optimizer state start fresh: the source's momentum is not zero.
  progress, momentum = read_items(workdir, 0)
  assert progress['step'] == 0 and progress['data_position'] == 0
  assert all(not np.any(leaf) for leaf in momentum)
  assert any(np.any(leaf) for leaf in read_items(source_dir, 2)[1])
  with open(os.path.join(workdir, init_from.RECORD)) as f:
    assert json.load(f) == {'init_from': copy, 'kind': 'workdir', 'step': 2,
                            'loaded': RESNET20_VARIABLES, 'variables': RESNET20_VARIABLES,
                            'fresh': {}, 'classes': None}
  assert workdirs.load_config(workdir).init_from == copy

  shutil.rmtree(copy)  # A restart reads its own checkpoints only.
  caplog.clear()
  with caplog.at_level(logging.INFO):
    state = train.train_and_evaluate(tiny_digits_config(data_dir, total_steps=1,
                                                        init_from=copy), workdir)
  assert 'Resumed from the checkpoint at step 1.' in caplog.text
  assert 'init_from: loaded' not in caplog.text
  assert int(state.step) == 1
  assert_same_bits(flat(state.variables), checkpoint(workdir, 1), start)


def test_another_class_count_reinitialises_only_the_classifier(source, data_dir, tmp_path, caplog):
  source_dir, source_variables = source
  run = resnet_jax.load_run(source_dir)
  seven_classes = jax.tree.map(np.asarray, run.variables)
  rng = np.random.default_rng(0)
  seven_classes['params']['fc'] = {'kernel': rng.standard_normal((64, 7), np.float32),
                                   'bias': rng.standard_normal(7, np.float32)}
  exported = str(tmp_path / 'seven_classes.msgpack')
  dataclasses.replace(run, variables=seven_classes).export(exported, serving=False)
  config = tiny_digits_config(data_dir, init_from=exported)
  # What the run does before its first step, onto fresh variables (zeros here, for speed).
  abstract = jax.eval_shape(lambda: models.from_config(config.model, 10).init(
      jax.random.key(0), jnp.zeros((1, 16, 16, 1)), train=False))
  fresh = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), abstract)
  with caplog.at_level(logging.INFO):
    plan = init_from.load(config, abstract)
  started = flat(init_from.apply(plan, fresh, sharding.replicated(sharding.create_mesh())))
  backbone = [k for k in source_variables if k not in CLASSIFIER]
  assert (f'init_from: loaded {len(backbone)} of the {RESNET20_VARIABLES} variables '
          f'(params and batch_stats) from {exported} (msgpack)') in caplog.text
  assert ('init_from: re-initialised the classifier (params/fc/bias, params/fc/kernel): 7 classes '
          'in the source, 10 in this run.') in caplog.text
  assert_same_bits(started, source_variables, backbone)
  assert_same_bits(started, flat(fresh), CLASSIFIER)


def write_source(tmp_path, variables, name='source.msgpack'):
  path = str(tmp_path / name)
  with open(path, 'wb') as f:
    f.write(flax.serialization.to_bytes(flax.traverse_util.unflatten_dict(variables, sep='/')))
  return path


@pytest.fixture(scope='module')
def cifar_stem(source, tmp_path_factory):
  """The source with a stem for three input channels, as a CIFAR-10 net has, exported."""
  variables = dict(source[1])
  variables['params/stem_conv/kernel'] = np.zeros((3, 3, 3, 16), np.float32)
  return write_source(tmp_path_factory.mktemp('cifar_stem'), variables)


def refusal(config, workdir, error=errors.InitFromError) -> str:
  """The message of the error a run of ``config`` stops with; nothing is written to the workdir."""
  with pytest.raises(error) as raised:
    train.train_and_evaluate(config, workdir)
  assert not os.path.exists(workdir)
  return str(raised.value)


def test_a_mismatch_elsewhere_is_an_error_naming_the_variable_before_anything_is_written(
    source, cifar_stem, data_dir, tmp_path):
  message = refusal(tiny_digits_config(data_dir, init_from=cifar_stem), str(tmp_path / 'run'))
  assert ('params/stem_conv/kernel: shape (3, 3, 3, 16) in the source, (3, 3, 1, 16) in this '
          'model') in message
  assert message.count(' in this model') == 1  # That variable alone.
  assert """--config.init_exclude="('stem_conv/.*',)\"""" in message
  # As the message says, excluding it loads everything else.
  config = tiny_digits_config(data_dir, init_from=cifar_stem, init_exclude=('stem_conv/.*',))
  abstract = jax.eval_shape(lambda: models.create_model('resnet20', 10).init(
      jax.random.key(0), jnp.zeros((1, 16, 16, 1)), train=False))
  plan = init_from.load(config, abstract)
  assert plan.fresh == {'params/stem_conv/kernel': 'init_exclude'}
  assert len(plan.loaded) == RESNET20_VARIABLES - 1


def deeper_net(config):
  config.model.name = 'resnet32'


@pytest.mark.parametrize('fields, change, message', [
    ({}, deeper_net, 'params/stage1_block4/conv1/kernel: in this model, not in the source'),
    ({'init_from_step': 7}, None, 'No checkpoint at step 7'),
    ({'init_exclude': ('fcc/.*',)}, None, "init_exclude 'fcc/.*' matches no variable"),
])
def test_a_workdir_that_does_not_fit_is_refused_with_the_reason(
    source, data_dir, tmp_path, fields, change, message):
  config = tiny_digits_config(data_dir, init_from=source[0], **fields)
  if change:
    change(config)
  assert message in refusal(config, str(tmp_path / 'run'))


def test_bad_sources_are_refused_with_what_to_give(source, data_dir, tmp_path):
  config = lambda **fields: tiny_digits_config(data_dir, **fields)
  workdir = str(tmp_path / 'run')
  assert 'does not exist' in refusal(config(init_from=str(tmp_path / 'nothing')), workdir)
  state_dict = str(tmp_path / 'net.npz')
  np.savez(state_dict, weight=np.zeros(1))
  assert "model.name='resnet20' has no torchvision counterpart" in refusal(
      config(init_from=state_dict), workdir)
  assert 'is not a directory' in refusal(config(init_from=state_dict, init_from_step=1), workdir)
  assert 'needs init_from' in refusal(config(init_from_step=1), workdir, errors.ConfigError)


def digits_resnet20():
  """The abstract variables of the digits ResNet-20, and its zeros, flat."""
  abstract = jax.eval_shape(lambda: models.create_model('resnet20', 10).init(
      jax.random.key(0), jnp.zeros((1, 16, 16, 1)), train=False))
  return abstract, {k: np.zeros(v.shape, v.dtype) for k, v in
                    flax.traverse_util.flatten_dict(abstract, sep='/').items()}


def test_a_source_of_nan_or_inf_is_refused_naming_the_variables_before_the_workdir_is_touched(
    data_dir, tmp_path):
  _, variables = digits_resnet20()
  variables['params/stage2_block1/conv1/kernel'][0, 0, 0, 3] = np.nan
  variables['batch_stats/stem_bn/var'][5] = np.inf
  config = tiny_digits_config(data_dir, init_from=write_source(tmp_path, variables))
  message = refusal(config, str(tmp_path / 'run'))
  assert (f'holds NaN or infinite values in 2 of its {RESNET20_VARIABLES} variables '
          '(batch_stats/stem_bn/var, params/stage2_block1/conv1/kernel)') in message


@pytest.mark.parametrize('content, words', [
    ({'params': np.zeros(3, np.float32), 'batch_stats': {}},
     "its 'params' is of type ndarray, not a dict"),
    ({'params': {'fc': {'kernel': 'weights'}}, 'batch_stats': {}},
     'its params/fc/kernel is of type str, not an array of numbers'),
    ({'params': {}}, "it has no 'batch_stats'"),
    ([1.0, 2.0], 'it holds a value of type list'),
])
def test_a_msgpack_of_another_structure_is_refused_with_what_to_give(content, words, data_dir,
                                                                     tmp_path):
  path = str(tmp_path / 'other.msgpack')
  with open(path, 'wb') as f:
    f.write(flax.serialization.msgpack_serialize(content))
  with pytest.raises(errors.InitFromError) as refused:
    init_from.load(tiny_digits_config(data_dir, init_from=path), digits_resnet20()[0])
  assert f"init_from={path!r} does not hold {{'params', 'batch_stats'}} of arrays" in str(
      refused.value)
  assert words in str(refused.value) and 'load_run(workdir).export(path)' in str(refused.value)


@pytest.mark.e2e
def test_a_pth_of_other_objects_ends_main_with_one_message_and_status_2(data_dir, tmp_path):
  """A pickle that torch.load(weights_only=True) refuses: the file named, what to give instead,
  never the unsafe way to read it; nothing runs, nothing is written."""
  marker = tmp_path / 'ran'
  state_dict = weight_files.write('objects.pth', str(tmp_path / 'model.pth'), str(marker))
  workdir = str(tmp_path / 'run')
  result = run_main(workdir, 'configs/digits.py', tiny_digits_flags(
      data_dir, **{'model.name': 'resnet18', 'init_from': state_dict}), check=False)
  assert result.returncode == 2, result.stderr[-3000:]
  message = result.stderr.strip().splitlines()[-1]
  assert message.startswith(f'InitFromError: init_from={state_dict!r}: {state_dict} holds Python '
                            'objects (shutil.copyfile), not tensors alone, and is not read')
  assert "model's state_dict() saved with torch.save" in message
  assert 'Traceback' not in result.stderr and 'weights_only=False' not in result.stderr
  assert not marker.exists() and not os.path.exists(workdir)


def test_a_network_of_the_same_shapes_loads_with_a_warning(source, data_dir, caplog):
  config = tiny_digits_config(data_dir, init_from=source[0], **{'model.name': 'plain20'})
  with caplog.at_level(logging.WARNING):
    read = init_from.read(config)
  assert "trained another network (model.name: 'resnet20' -> 'plain20')" in caplog.text
  assert read.step == 2 and len(read.variables) == RESNET20_VARIABLES


def test_torchvision_resnet18_weights_start_a_run_on_a_folder_of_224_pixel_photos(tmp_path,
                                                                                 monkeypatch,
                                                                                 caplog):
  """ImageNet's 1000 classes become the folder's two: every other variable is torchvision's."""
  torch.manual_seed(0)
  net = import_torchvision().models.resnet18(weights=None)
  state_dict = str(tmp_path / 'resnet18.pth')
  torch.save(net.state_dict(), state_dict)
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'prepared'))
  root = image_folders.write_photos(str(tmp_path / 'photos'), image_size=224,
                                    counts=(('train', 2), ('test', 1)))
  config = transfer.get_config('image_folder,linear')  # The classifier alone learns.
  config.model.update(name='resnet18', dtype='float32')
  config.dataset.data_dir = root
  config.batch_size = config.eval_batch_size = 2
  config.total_steps, config.total_epochs = 1, None
  config.eval_every_steps = config.checkpoint_every_steps = 1
  config.eval_every_epochs = config.checkpoint_every_epochs = None
  config.optimizer.update(lr_boundaries=(2,), lr_boundaries_unit='steps')
  config.init_from = state_dict
  workdir = str(tmp_path / 'run')
  with caplog.at_level(logging.INFO):
    train.train_and_evaluate(config, workdir)
  assert 'init_from: loaded 100 of the 102 variables' in caplog.text
  assert 're-initialised the classifier (params/fc/bias, params/fc/kernel)' in caplog.text
  converted = flat(tv_weights.from_torchvision(torch.load(state_dict), 'resnet18',
                                               input_std=tv_weights.TORCHVISION_INPUT_STD))
  start, trained = checkpoint(workdir, 0), checkpoint(workdir, 1)
  backbone = [k for k in converted if k not in CLASSIFIER]
  assert_same_bits(start, converted, backbone)
  assert start['params/fc/kernel'].shape == (512, 2)
  # Three tensors by hand: torch's OIHW kernels are HWIO here, the input scale folded in.
  torch_tensors = {k: v.numpy() for k, v in net.state_dict().items()}
  std = np.asarray(tv_weights.TORCHVISION_INPUT_STD, np.float32)
  np.testing.assert_array_equal(start['params/stem_conv/kernel'],
                                torch_tensors['conv1.weight'].transpose(2, 3, 1, 0) / std[:, None])
  np.testing.assert_array_equal(start['batch_stats/stage2_block1/shortcut/proj_bn/var'],
                                torch_tensors['layer2.0.downsample.1.running_var'])
  assert_same_bits(trained, converted, backbone)
  assert not np.array_equal(trained['params/fc/bias'], start['params/fc/bias'])


# --------------------------------------------------------------------------------------------
# What transfer needs: the backbone's own rate, frozen BatchNorm statistics.
# --------------------------------------------------------------------------------------------


def test_the_backbone_learns_at_its_multiple_of_the_rate_weight_decay_and_momentum_included():
  rng = np.random.default_rng(0)
  params = {'stem_conv': {'kernel': rng.standard_normal((3, 3, 1, 4), np.float32)},
            'fc': {'kernel': rng.standard_normal((4, 2), np.float32),
                   'bias': rng.standard_normal(2, np.float32)}}
  grads = [jax.tree.map(lambda p: rng.standard_normal(p.shape, np.float32), params)
           for _ in range(2)]
  config = tiny_digits_config('/unused')
  lr, wd, momentum = 0.02, config.optimizer.weight_decay, config.optimizer.momentum
  for multiplier in (0.25, 0.0):
    config.optimizer.backbone_lr_multiplier = multiplier
    tx, _ = optim.create_optimizer(config.optimizer, rate_of(config, 10))
    state, current = tx.init(params), params
    trace = jax.tree.map(lambda p: np.zeros(p.shape), params)
    for grad in grads:
      updates, state = tx.update(grad, state, current)
      # Caffe's SGD by hand: trace = momentum x trace + g + wd x w; update = -rate x trace.
      trace = jax.tree.map(lambda t, g, w: momentum * t + np.float64(g) + wd * np.float64(w),
                           trace, grad, current)
      for module, rate in (('stem_conv', lr * multiplier), ('fc', lr)):
        for name, update in updates[module].items():
          np.testing.assert_allclose(update, -rate * trace[module][name], rtol=2e-6, atol=1e-9)
      current = optax.apply_updates(current, updates)
    if multiplier == 0:  # Frozen exactly.
      np.testing.assert_array_equal(current['stem_conv']['kernel'], params['stem_conv']['kernel'])


def test_frozen_batchnorm_statistics_normalise_in_training_and_stay_unchanged():
  rng = np.random.default_rng(1)
  images = rng.standard_normal((4, 8, 8, 3)).astype(np.float32)
  for freeze in (True, False):
    model = models.create_model('resnet20', 10, stage_sizes=(1, 1, 1), freeze_bn_stats=freeze)
    # Random values for every variable; running variances positive, far from a fresh init's 1.
    variables = flax.traverse_util.path_aware_map(
        lambda path, a: (rng.uniform(0.5, 2.0, a.shape) if path[-1] == 'var'
                         else 0.3 * rng.standard_normal(a.shape)).astype(np.float32),
        jax.eval_shape(lambda m=model: m.init(jax.random.key(0), images, train=False)))
    trained, updates = jax.jit(lambda v, m=model: m.apply(
        v, images, train=True, mutable=['batch_stats']))(variables)
    evaluated = jax.jit(lambda v, m=model: m.apply(v, images, train=False))(variables)
    kept = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(updates['batch_stats']),
                                                    jax.tree.leaves(variables['batch_stats'])))
    assert kept == freeze and np.array_equal(trained, evaluated) == freeze
