"""Predicts the classes of image files with a trained run or an export, as CSV.

    python -m tools.predict --workdir=/tmp/resnet_jax/quickstart digits_png/ --output=pred.csv
    python -m tools.predict --export=resnet20.msgpack photo.jpg scan.png --top_k=3

Takes image files (PNG, JPEG, or any format PIL reads) and folders of them (searched
recursively, in sorted order), of any size: each is read as an image folder reads it, at the
net's channels (greyscale or RGB, 8 bits a sample), and preprocessed as the run's evaluation
preprocesses it (``Predictor.predict``: the SMALL family resizes the centre square to the eval
size, the IMAGENET family takes the centre crop at shorter side 256, or ``dataset.eval_crop`` at
``dataset.eval_resize`` where the run sets them). ``--weights=ema`` predicts with a run's moving
average of its weights. Neither the training data
nor the config is read: the run's inference record (``inference.json``) or the export holds what
inference needs. The CSV has one row an image: ``image,class_1,probability_1,...,class_K,
probability_K``, the most likely class first (an image with a NaN or infinite logit: empty
classes). It goes to ``--output`` or to stdout; the command ends with one line on what it did.
"""

import csv
import os
import sys

import jax
import numpy as np
from absl import app, flags
from PIL import Image

from resnet_jax import ema, errors, library_logs, notebook

FLAGS = flags.FLAGS
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff', '.webp')


def _data_modules():
  """``(eval_inputs, folder_builder)``, imported on first use: they import TensorFlow, whose
  start-up notices ``library_logs.configure`` drops where it imports it first."""
  from resnet_jax.data import eval_inputs, folder_builder  # pylint: disable=import-outside-toplevel
  return eval_inputs, folder_builder


def define_flags():
  """The command line flags (defined on demand, so that tests can import this module)."""
  flags.DEFINE_string('workdir', None, 'A trained run: its latest checkpoint predicts.')
  flags.DEFINE_string('export', None, 'A file that Run.export wrote, instead of a run.')
  flags.DEFINE_enum('weights', 'raw', ema.WEIGHTS, "With --workdir: the trained weights ('raw') "
                    "or their moving average ('ema', config.ema); an export holds one of them.")
  flags.DEFINE_integer('top_k', 5, 'Classes per image, the most likely first.')
  flags.DEFINE_string('output', None, 'The CSV file to write; default stdout.')
  library_logs.define_verbose_flag()
  flags.mark_flags_as_mutual_exclusive(['workdir', 'export'], required=True)


def image_files(paths) -> list[str]:
  """The image files of ``paths`` (files, and folders searched recursively, sorted); a
  ``DataError`` naming every path that is neither, before anything is read."""
  files, problems = [], []
  for path in paths:
    if os.path.isdir(path):
      found = sorted(os.path.join(root, name) for root, _, names in os.walk(path)
                     for name in names if name.lower().endswith(IMAGE_SUFFIXES))
      if not found:
        problems.append(f'{path}: a folder without image files ({", ".join(IMAGE_SUFFIXES)})')
      files += found
    elif not os.path.exists(path):
      problems.append(f'{path}: does not exist')
    else:
      files.append(path)
  if not paths:
    problems.append('no images given: name image files or folders after the flags')
  if problems:
    raise errors.DataError('Cannot predict these inputs; fix or leave them out:\n  '
                           + '\n  '.join(problems))
  return files


def check_headers(files) -> None:
  """A ``DataError`` naming every file whose header is not an image's (PIL reads headers only)."""
  _, folder_builder = _data_modules()
  problems = []
  for path in files:
    try:
      with Image.open(path):
        pass
    except folder_builder.UNDECODABLE as error:
      problems.append(f'{path}: {type(error).__name__}: {error}')
  folder_builder.refuse_undecodable(problems, 'the header')


def read_images(files, record) -> list[np.ndarray]:
  """uint8 [h, w, C] of each file (``eval_inputs.read_image``); ``DataError`` naming the files
  that do not decode fully."""
  eval_inputs, folder_builder = _data_modules()
  images, problems = [], []
  for path in files:
    try:
      images.append(eval_inputs.read_image(path, record))
    except folder_builder.UNDECODABLE as error:
      problems.append(f'{path}: {type(error).__name__}: {error}')
  folder_builder.refuse_undecodable(problems, 'a full decode')
  return images


def csv_rows(files, predictions, label_names):
  """One row an image: its path, then each of its top classes by name and its probability."""
  probabilities = np.asarray(jax.nn.softmax(predictions.logits.astype(np.float64), axis=-1))
  for path, ranked, probs in zip(files, predictions.labels, probabilities):
    cells = [path]
    for label in ranked:
      cells += ['', ''] if label < 0 else [label_names[label], f'{probs[label]:.6f}']
    yield cells


def predict(files, predictor, top_k: int, out) -> None:
  """Writes the CSV of ``files`` to the text stream ``out``, ``eval_batch_size`` images at a
  time."""
  writer = csv.writer(out, lineterminator='\n')
  writer.writerow(['image'] + [f'{c}_{k}' for k in range(1, top_k + 1)
                               for c in ('class', 'probability')])
  for start in range(0, len(files), predictor.eval_batch_size):
    chunk = files[start:start + predictor.eval_batch_size]
    predictions = predictor.predict(read_images(chunk, predictor.inference), top_k)
    writer.writerows(csv_rows(chunk, predictions, predictor.label_names))


def main(argv):
  if FLAGS.top_k < 1:
    raise app.UsageError(f'--top_k must be at least 1; got {FLAGS.top_k}.')
  library_logs.configure(FLAGS.verbose)
  with errors.exit_on_user_error():
    files = image_files(argv[1:])
    check_headers(files)
    try:
      predictor = notebook.load_predictor(FLAGS.workdir or FLAGS.export, FLAGS.weights)
    except ValueError as error:  # An export of variables alone, or one that does not fit.
      if isinstance(error, errors.USER_ERRORS):
        raise
      raise app.UsageError(str(error)) from error
    classes = len(predictor.label_names)
    if FLAGS.top_k > classes:
      raise app.UsageError(f'--top_k={FLAGS.top_k} is more than the {classes} classes of '
                           f'{predictor.inference.net}; give at most {classes}.')
    if FLAGS.output:
      with open(FLAGS.output + '.tmp', 'w', newline='') as out:
        predict(files, predictor, FLAGS.top_k, out)
      os.replace(FLAGS.output + '.tmp', FLAGS.output)
    else:
      predict(files, predictor, FLAGS.top_k, sys.stdout)
  record = predictor.inference.constants
  images = f'{len(files)} image{"" if len(files) == 1 else "s"}'
  print(f'Predicted {images} with {record["net"]} ({record["dataset"]}) -> '
        f'{FLAGS.output or "stdout"}', file=sys.stderr if not FLAGS.output else sys.stdout,
        flush=True)


if __name__ == '__main__':
  define_flags()
  app.run(main)
