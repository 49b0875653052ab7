"""A trained net that predicts and exports without its training data: ``Predictor``, the
model, its variables and the run's inference record (``inference_record``); ``ExportedModel``,
the net of an export file. ``notebook.Run`` is the predictor of a run's checkpoint.
"""

import dataclasses
import functools
import importlib
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import NamedSharding

from resnet_jax import exports, inference_record
from resnet_jax import serving as serving_export
from resnet_jax.parallel import sharding


class Predictions(NamedTuple):
  logits: np.ndarray  # float32 [N, num_classes].
  labels: np.ndarray  # int [N, top_k]: class indices, the most likely first; -1: none (NaN).


class _Placement(NamedTuple):
  """Variables replicated on a mesh of local devices and the jitted forward pass that uses them."""
  num_devices: int
  mesh: jax.sharding.Mesh
  variables: Any
  batch_sharding: NamedSharding
  logits_fn: Callable


def _eval_inputs():
  """The preprocessing of raw images (TensorFlow's ops), imported on first use."""
  return importlib.import_module('resnet_jax.data.eval_inputs')


@dataclasses.dataclass(frozen=True, eq=False)
class Predictor:
  """A trained net and what inference needs of it: its model, its variables ``{'params',
  'batch_stats'}`` and ``inference``, the run's ``inference_record.InferenceRecord``
  (preprocessing constants, label names, image size, the net's name and config). Predicts from
  raw images and exports without the training data. ``Run`` is a run's; ``ExportedModel`` an
  export's (``load_predictor``)."""
  model: nn.Module
  variables: dict
  _placements: dict = dataclasses.field(default_factory=dict, init=False, repr=False)

  @property
  def label_names(self) -> tuple[str, ...]:
    return self.inference.label_names

  @property
  def eval_batch_size(self) -> int:
    """The most images of one forward pass (the run's ``config.eval_batch_size``)."""
    return self.inference.constants['eval_batch_size']

  @property
  def num_devices(self) -> int:
    """The local devices ``predict`` and ``evaluate`` use: the most that divide the eval batch."""
    return max(n for n in range(1, jax.local_device_count() + 1)
               if self.eval_batch_size % n == 0)

  def preprocess(self, images) -> np.ndarray:
    """Raw uint8 images as the model sees them in evaluation (``data.eval_inputs``), from the
    inference record: a batch [N, h, w, C] or a sequence of [h, w, C] images of any size."""
    return _eval_inputs().preprocess(self.inference, images)

  def predict(self, images, top_k: int = 5) -> Predictions:
    """Logits and the ``top_k`` most likely classes of raw uint8 images.

    ``images``: [N, h, w, C], or a sequence of [h, w, C] images of any size. They are
    preprocessed as in evaluation (``preprocess``: the SMALL family resizes them to the eval
    size, the IMAGENET family takes their centre crop) and run in batches of at most
    ``eval_batch_size``.

    Tied classes come in the order of their indices (a stable sort), one of the orders whose
    average ``steps.top_k_errors`` counts. An image with a NaN or infinite logit has no
    prediction: -1 in every place of its row, as evaluation counts it an error at every k.
    """
    count = len(images)
    if not count:
      raise ValueError('predict needs at least one image.')
    if top_k < 1:
      raise ValueError(f'predict needs top_k >= 1; got {top_k}.')
    placement = self._placement()
    batch = min(self.eval_batch_size, -(-count // placement.num_devices)
                * placement.num_devices)
    logits = []
    for start in range(0, count, batch):
      inputs = self.preprocess(images[start:start + batch])
      padded, _ = sharding.pad_batch(inputs, batch)
      outputs = placement.logits_fn(placement.variables,
                                    jax.device_put(padded, placement.batch_sharding))
      logits.append(np.asarray(outputs)[:len(inputs)])
    logits = np.concatenate(logits)
    ranked = np.argsort(-logits, axis=-1, kind='stable')[:, :top_k]
    return Predictions(logits, np.where(np.isfinite(logits).all(-1, keepdims=True), ranked, -1))

  def export(self, path: str, serving: bool = True) -> None:
    """Writes everything inference needs to one flax msgpack file at ``path``: the variables
    and the inference record (``exports``; ``load_predictor`` reads it without the data or the
    config). ``serving``: also the StableHLO artifact of the forward pass, uint8 images in,
    logits out, beside it (``exports.serving_path``: ``model.msgpack`` -> ``model.stablehlo``;
    ``serving``)."""
    variables = jax.device_get(self.variables)
    record = dataclasses.replace(self.inference, constants={
        **self.inference.constants, 'weights': self.weights})
    exports.write(path, variables, record,
                  serving_export.serialize(self.model, variables, record) if serving else None)

  @property
  def weights(self) -> str:
    """Which weights these are: 'raw' (the trained ones) or 'ema' (their moving average)."""
    return self.inference.constants.get('weights', 'raw')

  def _placement(self) -> _Placement:
    """The variables replicated on ``num_devices`` local devices, and the jitted forward pass."""
    num_devices = self.num_devices
    if num_devices not in self._placements:
      mesh = sharding.create_mesh(jax.local_devices()[:num_devices])
      replicated, batched = sharding.replicated(mesh), sharding.batch_sharding(mesh)
      self._placements[num_devices] = _Placement(
          num_devices=num_devices, mesh=mesh,
          variables=jax.device_put(self.variables, replicated),
          batch_sharding=batched,
          logits_fn=jax.jit(functools.partial(self.model.apply, train=False),
                            in_shardings=(replicated, batched), out_shardings=replicated))
    return self._placements[num_devices]


@dataclasses.dataclass(frozen=True, eq=False)
class ExportedModel(Predictor):
  """The net of a file that ``Predictor.export`` wrote, with its inference record."""
  path: str
  inference: inference_record.InferenceRecord
