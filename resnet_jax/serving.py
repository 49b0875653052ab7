"""A net's inference as a ``jax.export`` (StableHLO) artifact, its preprocessing inside.

The exported function takes uint8 images [N, S, S, C] at the run's eval size (N symbolic: any
batch) and returns float32 logits [N, classes]: the record's normalisation
(``InferenceRecord.normalize``) and the variables are constants of the program, lowered for CPU,
CUDA and TPU. Calling it needs only JAX, not this project or Flax:

    exported = jax.export.deserialize(open('resnet20.stablehlo', 'rb').read())
    logits = exported.call(images)  # uint8 [N, S, S, C]
"""

import jax
import jax.numpy as jnp

PLATFORMS = ('cpu', 'cuda', 'tpu')
SUFFIX = '.stablehlo'


def inference_fn(model, variables, record):
  """``uint8 images [N, S, S, C] -> logits [N, classes]``, what the artifact computes."""
  def logits(images):
    return model.apply(variables, record.normalize(images, jnp), train=False)
  return logits


def serialize(model, variables, record) -> bytearray:
  """The serialized ``jax.export.Exported`` of ``inference_fn``."""
  batch, = jax.export.symbolic_shape('batch')
  images = jax.ShapeDtypeStruct((batch, record.image_size, record.image_size, record.channels),
                                jnp.uint8)
  exported = jax.export.export(jax.jit(inference_fn(model, variables, record)),
                               platforms=PLATFORMS)(images)
  return exported.serialize()
