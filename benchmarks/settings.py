"""What the benchmark runs: its settings, the project's program for them, and their data."""

import contextlib
import dataclasses
import tempfile

import numpy as np

from configs import default
import jax

from resnet_jax import models, run_plan, train


@dataclasses.dataclass(frozen=True)
class Settings:
  """The benchmark's command-line choices that every part shares."""
  model: str = 'resnet20'
  batch_size: int = 128
  dtype: str = 'float32'
  steps: int = 5  # Timed steps per window.
  repeats: int = 5  # Timed windows.
  peak_tflops: float = 0
  steps_per_call: int = 10
  data_dir: str | None = None

  @property
  def timing(self) -> dict:
    """The keyword arguments of ``timing.time_all``."""
    return dict(repeats=self.repeats, steps=self.steps, peak_tflops=self.peak_tflops)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    size = 32 if models.model_family(self.model) == 'cifar' else 224
    return (size, size, 3)

  @property
  def num_classes(self) -> int:
    return 10 if models.model_family(self.model) == 'cifar' else 1000


def bench_config(settings: Settings, cpu_fusion_barriers=True, **model_overrides):
  """The default config with the benchmark's model, dtype and batch, on CIFAR-10 or ImageNet
  (the model's family)."""
  config = default.get_config()
  if models.model_family(settings.model) == 'imagenet':
    config.dataset.update(name='imagenet2012', train_split='train', eval_split='validation',
                          image_size=224)
  config.cpu_fusion_barriers = cpu_fusion_barriers
  config.model.update(name=settings.model, dtype=settings.dtype, **model_overrides)
  config.batch_size = settings.batch_size
  return config


def synthetic_batch(settings: Settings, seed=0):
  """Random inputs: constant ones would zero BatchNorm's variance (denormal slow paths)."""
  rng = np.random.default_rng(seed)
  return {'image': rng.standard_normal((settings.batch_size, *settings.image_shape), np.float32),
          'label': rng.integers(0, settings.num_classes, settings.batch_size).astype(np.int32)}


def program(settings: Settings, **overrides) -> train.Program:
  """The training run's own mesh, model, optimizer and jitted calls for the settings, on every
  local device; its schedule is the dataset's (from the registry's facts: no data is read)."""
  plan = run_plan.resolve(bench_config(settings, **overrides), devices=jax.device_count(),
                          processes=1)
  return train.build_program(plan)


@contextlib.contextmanager
def dataset(config, num_examples: int, data_dir: str | None):
  """Serves config.dataset from ``data_dir`` when prepared there, otherwise from mock data.

  Yields a note saying which.
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  from resnet_jax.data import digits as digits_dataset  # noqa: F401  (registers 'digits')
  from resnet_jax.testing.mock_tfds import prepared_mock  # pylint: disable=import-outside-toplevel
  name = config.dataset.name
  builder = tfds.builder(name, data_dir=data_dir)
  if name == 'digits' or builder.is_prepared():
    config.dataset.data_dir = data_dir
    yield 'real data'
    return
  with tempfile.TemporaryDirectory() as mock_dir:
    config.dataset.data_dir = mock_dir
    splits = ('train', 'validation' if name == 'imagenet2012' else 'test')
    with prepared_mock(name, mock_dir, num_examples, splits=splits):
      yield f'tfds.testing.mock_data ({num_examples} random examples)'
