"""Models that leave the codebase: a run predicts after its data is gone, an export loads without
data or config, the StableHLO artifact runs on plain JAX, and tools/predict.py writes the classes
of image files."""

import csv
import dataclasses
import functools
import io
import json
import os
import shutil
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from sklearn.datasets import load_digits

import resnet_jax
from configs import imagenet as imagenet_configs
from resnet_jax import errors, inference_record, init_from, models, serving, train
from resnet_jax.data import datasets, eval_inputs
from resnet_jax.data import digits as digits_dataset
from resnet_jax.testing import tfrecord_imagenet
from tests.harness import ROOT, tiny_digits_config
from tools import predict

STEPS = 40


def digits_split(split):
  """The uint8 [N, 8, 8, 1] images and labels of a split, straight from scikit-learn."""
  digits = load_digits()
  indices = digits_dataset.split_indices()[split]
  return digits_dataset.to_uint8(digits.images[indices])[..., None], digits.target[indices]


@pytest.fixture(scope='module')
def trained(data_dir, tmp_path_factory):
  """A digits run of 40 steps on its own copy of the data: (workdir, data copy, the test
  digits' predictions with the data present, from the data's preprocessing)."""
  root = tmp_path_factory.mktemp('serving')
  data_copy, workdir = str(root / 'tfds'), str(root / 'run')
  shutil.copytree(data_dir, data_copy)
  train.train_and_evaluate(tiny_digits_config(
      data_copy, total_steps=STEPS, eval_every_steps=STEPS, checkpoint_every_steps=STEPS,
      **{'optimizer.lr_boundaries': (30,), 'optimizer.learning_rate': 0.1}), workdir)
  run = resnet_jax.load_run(workdir)
  from_data = dataclasses.replace(run, recorded=None)  # As a run from before the record.
  return workdir, data_copy, from_data.predict(digits_split('test')[0])


@pytest.fixture(scope='module')
def pngs(tmp_path_factory):
  """The 297 test digits as 8x8 greyscale PNG files, named by position."""
  folder = tmp_path_factory.mktemp('digits_png')
  for i, image in enumerate(digits_split('test')[0]):
    Image.fromarray(image[..., 0], 'L').save(folder / f'{i:03d}.png')
  return str(folder)


def without_data(trained):
  """The run's workdir once its data is deleted (the data of every test after the first)."""
  workdir, data_copy, _ = trained
  shutil.rmtree(data_copy, ignore_errors=True)
  return workdir


def read_csv(text):
  rows = list(csv.reader(io.StringIO(text)))
  return rows[0], rows[1:]


def softmax(logits):
  shifted = np.float64(logits) - np.max(logits, axis=-1, keepdims=True)
  return np.exp(shifted) / np.exp(shifted).sum(-1, keepdims=True)


def test_the_run_records_the_mean_image_labels_and_net(trained):
  workdir = trained[0]
  record = json.loads(open(os.path.join(workdir, 'inference.json')).read())
  assert (record['net'], record['dataset'], record['image_size'], record['channels']) == (
      'resnet20', 'digits', 16, 1)
  assert record['label_names'] == [str(i) for i in range(10)]
  assert record['model']['name'] == 'resnet20' and record['eval_view'] == 'resize'
  # The train split's mean in [0, 1], upsampled bilinearly with half-pixel centres: PIL's.
  mean = digits_split('train')[0][..., 0].mean(0) / 255.0
  expected = np.asarray(Image.fromarray(np.float32(mean), 'F').resize((16, 16),
                                                                       Image.Resampling.BILINEAR))
  with np.load(os.path.join(workdir, 'inference.npz')) as arrays:
    np.testing.assert_allclose(arrays['pixel_mean'][..., 0], expected, rtol=0, atol=1e-6)


def test_the_run_is_better_than_chance_so_agreeing_classes_mean_something(trained):
  _, labels = digits_split('test')
  assert np.mean(trained[2].labels[:, 0] == labels) > 0.5


def test_predict_on_png_files_gives_the_classes_of_the_run_with_the_data_deleted(trained, pngs):
  workdir, expected = without_data(trained), trained[2]
  predictor = resnet_jax.load_predictor(workdir)
  out = io.StringIO()
  predict.predict(predict.image_files([pngs]), predictor, 5, out)
  header, rows = read_csv(out.getvalue())
  assert header[:3] == ['image', 'class_1', 'probability_1'] and len(header) == 11
  assert [os.path.basename(r[0]) for r in rows] == [f'{i:03d}.png' for i in range(297)]
  classes = np.array([[int(c) for c in r[1::2]] for r in rows])
  np.testing.assert_array_equal(classes, expected.labels)
  probabilities = np.array([[float(p) for p in r[2::2]] for r in rows])
  np.testing.assert_allclose(probabilities, np.take_along_axis(
      softmax(expected.logits), expected.labels, 1), rtol=0, atol=1e-6)
  assert not os.path.exists(trained[1])  # Nothing prepared the data again.


def test_an_export_loads_without_data_or_config_and_predicts_the_same(trained, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(without_data(trained), workdir)
  path = str(tmp_path / 'resnet20.msgpack')
  resnet_jax.load_run(workdir).export(path)
  shutil.rmtree(workdir)  # No config.json, no checkpoints: the file alone.
  exported = resnet_jax.load_predictor(path)
  assert (exported.inference.net, exported.label_names) == ('resnet20', tuple('0123456789'))
  images = digits_split('test')[0]
  # Float32 round-off of another compilation of the same program: a unit in the last place.
  np.testing.assert_allclose(exported.predict(images).logits, trained[2].logits, rtol=1e-6,
                             atol=1e-6)
  np.testing.assert_array_equal(exported.predict(images).labels, trained[2].labels)
  model, variables = resnet_jax.load_exported(path)
  # One batch of 297, not batches of 64: the convolutions' sums are blocked otherwise.
  np.testing.assert_allclose(
      model.apply(variables, exported.preprocess(images), train=False), trained[2].logits,
      rtol=0, atol=1e-5)
  assert not os.path.exists(trained[1])


def test_init_from_reads_the_new_export_and_an_old_one_of_variables_alone(trained, tmp_path):
  run = resnet_jax.load_run(without_data(trained))
  new, old = str(tmp_path / 'new.msgpack'), str(tmp_path / 'old.msgpack')
  run.export(new, serving=False)
  assert not os.path.exists(tmp_path / 'new.stablehlo')
  with open(old, 'wb') as f:
    f.write(flax.serialization.to_bytes(jax.device_get(run.variables)))
  expected = flax.traverse_util.flatten_dict(jax.device_get(run.variables), sep='/')
  for path in (new, old):
    source = init_from.read(tiny_digits_config(str(tmp_path), init_from=path))
    assert source.variables.keys() == expected.keys()
    for key, value in expected.items():
      np.testing.assert_array_equal(source.variables[key], value)
  model, _ = resnet_jax.load_exported(old, run.config)
  assert model == run.model
  with pytest.raises(ValueError, match='holds the variables alone'):
    resnet_jax.load_exported(old)


def serving_inputs():
  """uint8 [5, 16, 16, 1]: test digits upsampled by PIL to the eval size."""
  return np.stack([np.asarray(Image.fromarray(image[..., 0]).resize((16, 16)))[..., None]
                   for image in digits_split('test')[0][:5]])


def test_the_stablehlo_artifact_gives_the_runs_logits_for_any_batch(trained, tmp_path):
  run = resnet_jax.load_run(without_data(trained))
  path = str(tmp_path / 'resnet20.msgpack')
  run.export(path)
  exported = jax.export.deserialize(open(tmp_path / 'resnet20.stablehlo', 'rb').read())
  images = serving_inputs()
  assert exported.in_avals[0].dtype == np.uint8 and exported.in_avals[0].shape[1:] == (16, 16, 1)
  # Float32 round-off: the artifact's program folds its constants differently from the run's.
  for batch in (1, 5):
    np.testing.assert_allclose(exported.call(images[:batch]), run.predict(images[:batch]).logits,
                               rtol=0, atol=1e-5)


@pytest.mark.e2e
def test_the_stablehlo_artifact_runs_in_a_python_without_the_project(trained, tmp_path):
  run = resnet_jax.load_run(without_data(trained))
  run.export(str(tmp_path / 'resnet20.msgpack'))
  images = serving_inputs()
  np.save(tmp_path / 'images.npy', images)
  code = ('import sys, jax, numpy as np\n'
          "exported = jax.export.deserialize(open('resnet20.stablehlo', 'rb').read())\n"
          "np.save('logits.npy', np.asarray(exported.call(np.load('images.npy'))))\n"
          "print(sorted(m for m in sys.modules if m.split('.')[0] in "
          "('flax', 'resnet_jax', 'tensorflow')))\n")
  # -I: neither the working directory nor PYTHONPATH on the path, so resnet_jax cannot import.
  result = subprocess.run([sys.executable, '-I', '-c', code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip() == '[]'
  np.testing.assert_allclose(np.load(tmp_path / 'logits.npy'), run.predict(images).logits,
                             rtol=0, atol=1e-5)


@pytest.mark.e2e
def test_the_predict_command_writes_the_runs_classes_and_ends_with_its_line(trained, pngs,
                                                                             tmp_path):
  workdir, expected = without_data(trained), trained[2]
  output = str(tmp_path / 'predictions.csv')
  result = subprocess.run(
      [sys.executable, '-m', 'tools.predict', f'--workdir={workdir}', '--top_k=1', pngs,
       f'--output={output}'], cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().splitlines()[-1] == (
      f'Predicted 297 images with resnet20 (digits) -> {output}')
  header, rows = read_csv(open(output).read())
  assert header == ['image', 'class_1', 'probability_1']
  np.testing.assert_array_equal([int(r[1]) for r in rows], expected.labels[:, 0])
  assert not os.path.exists(trained[1])


def test_predict_names_every_bad_input_before_any_work(tmp_path):
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'notes.png').write_text('not an image')
  with pytest.raises(errors.DataError) as refused:
    predict.image_files([str(tmp_path / 'empty'), str(tmp_path / 'missing.png')])
  assert 'empty: a folder without image files' in str(refused.value)
  assert 'missing.png: does not exist' in str(refused.value)
  with pytest.raises(errors.DataError, match=r'(?s)1 file\(s\) are not decodable.*notes.png'):
    predict.check_headers([str(tmp_path / 'notes.png')])


def test_a_colour_photo_of_another_shape_is_read_as_the_nets_greyscale_centre_square(tmp_path):
  rgb = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)
  Image.fromarray(rgb, 'RGB').save(tmp_path / 'photo.png')
  record = inference_record.InferenceRecord(
      {'channels': 1, 'eval_view': 'resize', 'image_size': 16}, {})
  image = eval_inputs.read_image(str(tmp_path / 'photo.png'), record)
  # PIL's 'L': ITU-R 601-2 luma, L = (299 R + 587 G + 114 B) / 1000, rounded; the centre 6x6.
  luma = (rgb[:, 2:8].astype(np.int64) @ np.array([299, 587, 114]) + 500) // 1000
  assert image.shape == (6, 6, 1)
  np.testing.assert_allclose(image[..., 0], luma, atol=1)


def two_tone_photo(left, right, height, width):
  image = np.full((height, width, 3), right, np.uint8)
  image[:, :width // 2] = left
  return image


def test_an_imagenet_like_run_records_its_centre_crop_and_serves_its_eval_crops(tmp_path):
  # The 4th photo lies beyond mean_examples=3.
  photos = [two_tone_photo(200, 40, 300, 400), two_tone_photo(120, 80, 256, 256),
            two_tone_photo(160, 20, 400, 300), two_tone_photo(0, 255, 280, 290)]
  jpegs = [tf.io.encode_jpeg(p).numpy() for p in photos]
  tfrecord_imagenet.prepare(str(tmp_path), {split: (jpegs, range(len(jpegs)))
                                            for split in ('train', 'validation')}, num_files=1)
  config = imagenet_configs.get_config('resnet18,pixel_mean')
  config.model.bn_group_size = 0
  config.dataset.update(data_dir=str(tmp_path), image_size=32, mean_examples=3)
  config.update(batch_size=4, eval_batch_size=4)
  data = datasets.open_config(config)
  record = data.inference_record()
  assert (record.constants['eval_view'], record.constants['eval_shorter_side']) == (
      'centre_crop', 256)
  np.testing.assert_allclose(record.channel_mean, (0.485, 0.456, 0.406), rtol=1e-6)
  # By hand: the centre crops keep each photo's halves, (200 + 120 + 160) / 3 = 160 on the left
  # and (40 + 80 + 20) / 3 = 46.7 on the right (JPEG blurs the edge between them).
  mean = record.channel_mean + record.pixel_mean
  np.testing.assert_allclose(mean[:, 2], 160 / 255, atol=3 / 255)
  np.testing.assert_allclose(mean[:, -3], 140 / 3 / 255, atol=3 / 255)
  # The artifact's function on evaluation's uint8 crops, the net on the decoded photos
  # preprocessed from the record: the same logits.
  crops = next(iter(data.eval_split()))['image']
  model = models.from_config(config.model, 4)
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  decoded = [tf.io.decode_jpeg(j).numpy() for j in jpegs]
  np.testing.assert_allclose(
      serving.inference_fn(model, variables, record)(crops),
      model.apply(variables, eval_inputs.preprocess(record, decoded), train=False),
      rtol=0, atol=1e-4)
