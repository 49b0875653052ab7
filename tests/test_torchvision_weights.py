"""torchvision <-> Flax weights: torchvision's own nets, randomly initialised, logit for logit.

Needs torch and torchvision (``pip install -r requirements-bench.txt``); fails, never skips,
without them.
"""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
import torch
from absl.flags import FLAGS

from benchmarks.torch_input import import_torchvision
from resnet_jax import errors, steps, torchvision_weights
from resnet_jax.data import datasets
from resnet_jax.evaluation import protocols
from resnet_jax.testing import weight_files
from resnet_jax.testing.mock_tfds import jpeg_dataset, prepared_mock
from tools import evaluate

torchvision = import_torchvision()

SIZE = 64  # Small inputs keep the full nets fast; 64 still leaves a 2x2 map in the last stage.


def randomised(net: torch.nn.Module, seed: int) -> torch.nn.Module:
  """``net`` in eval mode with random BatchNorm scales, biases and running statistics."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module in net.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        channels = module.num_features
        module.weight.copy_(0.5 + torch.rand(channels, generator=generator))
        module.bias.copy_(0.1 * torch.randn(channels, generator=generator))
        module.running_mean.copy_(0.1 * torch.randn(channels, generator=generator))
        module.running_var.copy_(0.5 + torch.rand(channels, generator=generator))
  return net.eval()


@pytest.fixture(scope='module', params=['resnet18', 'resnet50', 'wide_resnet50_2',
                                        'resnext50_32x4d'])
def net(request):
  """(name, a random torchvision net): a basic-block and a bottleneck ResNet, a wide ResNet and
  a ResNeXt (the smallest of each; the others round-trip below)."""
  torch.manual_seed(0)
  return request.param, randomised(getattr(torchvision.models, request.param)(), seed=1)


def images(seed=0, count=2):
  return np.random.default_rng(seed).standard_normal((count, SIZE, SIZE, 3)).astype(np.float32)


def torch_logits(net, x_nhwc):
  with torch.no_grad():
    return net(torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))).numpy()


def flax_logits(name, variables, x):
  return np.asarray(jax.jit(lambda v, x: torchvision_weights.create_model(name).apply(v, x, train=False))(
      variables, x))


def assert_logits_close(actual, expected):
  assert np.abs(expected).max() > 0.1  # Not a degenerate net.
  np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_torchvision_weights_give_torchvisions_logits_in_flax(net):
  name, torch_net = net
  variables = torchvision_weights.from_torchvision(torch_net.state_dict(), name)
  x = images()
  assert_logits_close(flax_logits(name, variables, x), torch_logits(torch_net, x))


def test_flax_weights_give_the_same_logits_in_torchvision(net):
  name, _ = net
  # Other random weights, made in Flax, loaded into a fresh torchvision net (strictly).
  donor = torchvision_weights.from_torchvision(randomised(getattr(torchvision.models, name)(), 2)
                                   .state_dict(), name)
  variables = jax.tree.map(lambda v: v * np.float32(1.1), donor)
  fresh = getattr(torchvision.models, name)()
  fresh.load_state_dict({k: torch.from_numpy(v) for k, v in
                         torchvision_weights.to_torchvision(variables, name).items()}, strict=True)
  x = images(1)
  assert_logits_close(torch_logits(fresh.eval(), x), flax_logits(name, variables, x))


def test_round_trips_are_bit_exact(net):
  assert_round_trip(*net)


@pytest.mark.parametrize('name', ['wide_resnet101_2', 'resnext101_32x8d', 'resnext101_64x4d'])
def test_the_deeper_wide_resnets_and_resnexts_round_trip_bit_for_bit(name):
  # Their third stage of 23 blocks is stacked (models.layouts) on the way in and out.
  torch_net = randomised(getattr(torchvision.models, name)(), seed=5)
  variables = torchvision_weights.from_torchvision(torch_net.state_dict(), name)
  assert 'stage3_blocks' in variables['params']
  assert_round_trip(name, torch_net)


def assert_round_trip(name, torch_net):
  """torch -> Flax -> torch and Flax -> torch -> Flax give back every value bit for bit."""
  state = {k: v.numpy() for k, v in torch_net.state_dict().items()}
  back = torchvision_weights.to_torchvision(torchvision_weights.from_torchvision(state, name), name)
  assert back.keys() == state.keys()
  for key, value in state.items():
    assert back[key].dtype == value.dtype, key
    np.testing.assert_array_equal(back[key], value, err_msg=key)
  variables = torchvision_weights.from_torchvision(state, name)
  again = torchvision_weights.from_torchvision(torchvision_weights.to_torchvision(variables, name), name)
  jax.tree.map(np.testing.assert_array_equal, again, variables)


def test_input_std_folds_torchvisions_normalisation_into_the_stem(net):
  name, torch_net = net
  std = np.float32(torchvision_weights.TORCHVISION_INPUT_STD)
  variables = torchvision_weights.from_torchvision(torch_net.state_dict(), name,
                                       input_std=torchvision_weights.TORCHVISION_INPUT_STD)
  x = images(2)  # Inputs minus the mean, as this project's pipeline gives them.
  assert_logits_close(flax_logits(name, variables, x), torch_logits(torch_net, x / std))
  back = torchvision_weights.to_torchvision(variables, name, input_std=torchvision_weights.TORCHVISION_INPUT_STD)
  np.testing.assert_allclose(back['conv1.weight'], torch_net.state_dict()['conv1.weight'],
                             rtol=1e-6)


def test_every_key_is_accounted_for():
  state = {k: v.numpy() for k, v in torchvision.models.resnet18().state_dict().items()}
  missing = {k: v for k, v in state.items() if k != 'layer3.1.bn2.running_var'}
  with pytest.raises(ValueError, match=r'missing 1: layer3\.1\.bn2\.running_var'):
    torchvision_weights.from_torchvision(missing, 'resnet18')
  with pytest.raises(ValueError, match=r'not part of the net 1: layer3\.1\.downsample\.0\.weight'):
    torchvision_weights.from_torchvision({**state, 'layer3.1.downsample.0.weight': state['conv1.weight']},
                             'resnet18')
  with pytest.raises(ValueError, match=r"'module\.'"):
    torchvision_weights.from_torchvision({f'module.{k}': v for k, v in state.items()}, 'resnet18')
  with pytest.raises(ValueError, match=r'fc\.weight has shape \(10, 512\).*\(1000, 512\)'):
    torchvision_weights.from_torchvision({**state, 'fc.weight': state['fc.weight'][:10]}, 'resnet18')
  # resnet34 has 8 more basic blocks of 2 convs and 2 BatchNorms (5 tensors each): 96 tensors.
  with pytest.raises(ValueError, match=r"not part of the net 96: layer1\.2\.bn1\.bias, .* and 86 "
                     r"more\. These are the keys of torchvision's resnet34\."):
    torchvision_weights.from_torchvision(torchvision.models.resnet34().state_dict(), 'resnet18')
  with pytest.raises(ValueError, match='plain18'):
    torchvision_weights.from_torchvision(state, 'plain18')

  variables = torchvision_weights.from_torchvision(state, 'resnet18')
  del variables['batch_stats']['stage2_block1']['shortcut']['proj_bn']['mean']
  variables['params']['extra'] = {'kernel': np.zeros(1)}
  with pytest.raises(ValueError, match=r'missing 1: batch_stats/stage2_block1/shortcut/proj_bn/'
                     r'mean; not part of the net 1: params/extra/kernel'):
    torchvision_weights.to_torchvision(variables, 'resnet18')


@pytest.mark.e2e
def test_the_converter_does_not_import_torch():
  code = "import sys; from resnet_jax import torchvision_weights; assert 'torch' not in sys.modules"
  subprocess.run([sys.executable, '-c', code], check=True)


@pytest.mark.parametrize('kind, words', [
    ('objects.pth', 'holds Python objects (shutil.copyfile), not tensors alone, and is not read'),
    ('objects.npz', 'holds Python objects (an object array), not tensors alone, and is not read'),
    ('truncated.pth', 'cannot be read as a state dict (RuntimeError): it is damaged, cut short'),
    ('empty.pth', 'cannot be read as a state dict (EOFError): it is damaged, cut short'),
])
def test_weights_that_are_no_state_dict_are_refused_by_name_and_nothing_in_them_runs(
    kind, words, tmp_path):
  path, marker = str(tmp_path / kind), tmp_path / 'ran'
  weight_files.write(kind, path, str(marker))
  with pytest.raises(errors.DataError) as refused:
    torchvision_weights.read_state_dict(path)
  assert str(refused.value).startswith(f'{path} {words}')
  assert 'weights_only=False' not in str(refused.value) and 'allow_pickle' not in str(refused.value)
  assert not marker.exists()


def test_those_files_of_objects_would_run_code_if_they_were_unpickled(tmp_path):
  """What the refusals above prevent: rebuilding the objects creates the marker file."""
  for kind, unpickle in (('objects.pth', lambda p: torch.load(p, weights_only=False)),
                         ('objects.npz', lambda p: np.load(p, allow_pickle=True)['weight'])):
    marker = tmp_path / f'{kind}.ran'
    unpickle(weight_files.write(kind, str(tmp_path / kind), str(marker)))
    assert marker.exists()


def test_evaluate_command_refuses_such_a_file_with_its_message_and_status_2(tmp_path, capsys):
  path, marker, output = str(tmp_path / 'model.pth'), tmp_path / 'ran', tmp_path / 'result.json'
  weight_files.write('objects.pth', path, str(marker))
  if 'torchvision_checkpoint' not in FLAGS:
    evaluate.define_flags()
  FLAGS(['evaluate', f'--torchvision_checkpoint={path}', '--model=resnet18',
         f'--output={output}'])
  try:
    with pytest.raises(SystemExit) as status:
      evaluate.main(['evaluate'])
  finally:
    FLAGS.unparse_flags()
  assert status.value.code == 2
  assert capsys.readouterr().err == (
      f'DataError: {path} holds Python objects (shutil.copyfile), not tensors alone, and is not '
      'read: rebuilding them can run any code, and a state dict needs none. Give a file of '
      "tensors alone: torchvision's published weights, a model's state_dict() saved with "
      'torch.save, or an .npz of the same keys.\n')
  assert not marker.exists() and not output.exists()


def serve_jpegs(images, labels):
  return tfds.testing.mock_data(as_dataset_fn=jpeg_dataset(images, labels))


def test_evaluate_command_scores_a_torchvision_checkpoint_as_torchvision_does(tmp_path):
  """The command's errors equal torchvision's own on the project's preprocessed images / std."""
  path, output = str(tmp_path / 'resnet18.pth'), str(tmp_path / 'result.json')
  torch_net = randomised(torchvision.models.resnet18(), seed=3)
  torch.save(torch_net.state_dict(), path)
  rng = np.random.default_rng(0)
  photos = [rng.integers(0, 256, (h, w, 3), np.uint8) for h, w in
            ((300, 400), (256, 256), (500, 260), (280, 290), (333, 500))]
  config = evaluate.torchvision_config('resnet18', str(tmp_path), batch_size=5)
  with prepared_mock('imagenet2012', str(tmp_path), len(photos), splits=('train', 'validation')):
    with serve_jpegs(photos, [0] * len(photos)):
      batch = next(iter(datasets.open_config(config, training=False).eval_split()))
      config, model, variables = evaluate.load_torchvision(path, 'resnet18', str(tmp_path),
                                                           batch_size=5)
      (probabilities, _, mask), = protocols.predictions(
          datasets.plan_for(config, training=False), model, variables, 'center')
    assert mask.all()
    images = np.asarray(steps.model_images(batch))  # As the model sees them.
    scores = torch_logits(torch_net, images / np.float32(torchvision_weights.TORCHVISION_INPUT_STD))
    np.testing.assert_allclose(probabilities, jax.nn.softmax(scores), rtol=1e-3, atol=1e-6)
    # Two right labels, three that torchvision ranks last: 3/5 wrong in top-1 and in top-5.
    labels = np.where(np.arange(5) < 2, scores.argmax(1), scores.argmin(1))
    if 'torchvision_checkpoint' not in FLAGS:
      evaluate.define_flags()
    FLAGS(['evaluate', f'--torchvision_checkpoint={path}', '--model=resnet18', '--mode=center',
           f'--data_dir={tmp_path}', '--batch_size=5', f'--output={output}'])
    try:
      with serve_jpegs(photos, labels):
        evaluate.main(['evaluate'])
    finally:
      FLAGS.unparse_flags()
  with open(output) as f:
    result = json.load(f)
  assert result['num_examples'] == 5 and result['checkpoint'] == path
  assert result['error_top1'] == pytest.approx(3 / 5)
  assert result['error_top5'] == pytest.approx(3 / 5)
