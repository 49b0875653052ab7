"""Layer responses (the paper's Figure 7): the std of every 3x3 conv's output after BatchNorm.

A response is the output of a BatchNorm module that directly follows a 3x3 convolution, before
the ReLU or the shortcut addition, in inference mode (running statistics). Its standard
deviation is taken over every element (examples, positions and channels) of the given images.
The outputs are captured with ``nn.intercept_methods``; the model is not changed.
"""

import functools
from collections.abc import Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax import models
from resnet_jax.parallel import sharding

NORMS = (nn.BatchNorm, models.GroupedBatchNorm)


def _capture_responses(model, variables, images):
  """Forward pass that returns [(BN path, BN output)] for each BN right after a 3x3 conv."""
  responses, last_conv = [], [None]

  def interceptor(next_fun, args, kwargs, context):
    output = next_fun(*args, **kwargs)
    if context.method_name == '__call__':
      if isinstance(context.module, nn.Conv):
        last_conv[0] = tuple(context.module.kernel_size)
      elif isinstance(context.module, NORMS):
        if last_conv[0] == (3, 3):
          responses.append(('/'.join(context.module.path), output))
        last_conv[0] = None
    return output

  with nn.intercept_methods(interceptor):
    model.apply(variables, images, train=False)
  return responses


@functools.partial(jax.jit, static_argnums=0)
def _batch_moments(model, variables, images, mask):
  """Per layer: element count, mean and sum of squared deviations over the unmasked examples."""
  moments = []
  for _, output in _capture_responses(model, variables, images):
    output = output.astype(jnp.float32)
    weight = jnp.broadcast_to(mask[:, None, None, None], output.shape).astype(jnp.float32)
    count = weight.sum()
    mean = (output * weight).sum() / jnp.maximum(count, 1.0)
    moments.append((count, mean, (jnp.square(output - mean) * weight).sum()))
  return moments


def _layer_names(model, variables, image_shape):
  names = []

  def record(variables, images):
    names.extend(name for name, _ in _capture_responses(model, variables, images))

  jax.eval_shape(record, variables, jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
  return names


def responses_of_batches(model, variables, batches: Iterator[tuple[np.ndarray, np.ndarray]],
                         image_shape) -> list[tuple[str, float]]:
  """Layer responses over (images, mask) batches; examples whose mask is False do not count.

  The net runs unrolled (one module per block): inside a scanned stage the blocks' outputs
  would be values of the scan's body, not of each block.
  """
  model, variables = model.clone(scan_blocks=False), models.unrolled(variables)
  totals = None
  for images, mask in batches:
    moments = [tuple(np.float64(m) for m in layer)
               for layer in jax.device_get(_batch_moments(model, variables, images, mask))]
    # Chan et al.'s pairwise merge of (count, mean, M2): no cancellation between batches.
    totals = moments if totals is None else [
        (n_a + n_b, mean_a + (mean_b - mean_a) * n_b / max(n_a + n_b, 1.0),
         m2_a + m2_b + (mean_b - mean_a) ** 2 * n_a * n_b / max(n_a + n_b, 1.0))
        for (n_a, mean_a, m2_a), (n_b, mean_b, m2_b) in zip(totals, moments)]
  names = _layer_names(model, variables, image_shape)
  return [(name, float(np.sqrt(m2 / count))) for name, (count, _, m2) in zip(names, totals)]


def layer_responses(model, variables, images, batch_size: int = 256) -> list[tuple[str, float]]:
  """[(BatchNorm path, std of its output)] for every 3x3 conv layer, in layer order.

  ``images`` are preprocessed model inputs [N, H, W, C]; the last batch is padded and masked.
  """
  images = np.asarray(images, np.float32)

  batches = (sharding.pad_batch(images[start:start + batch_size], batch_size)
             for start in range(0, len(images), batch_size))
  return responses_of_batches(model, variables, batches, images.shape[1:])


def workdir_layer_responses(workdir: str, step=None, data_dir=None) -> list[tuple[str, float]]:
  """Layer responses of a run's checkpoint (default: the latest) on its eval split."""
  # pylint: disable=import-outside-toplevel  (TensorFlow)
  from resnet_jax import notebook, steps
  run = notebook.load_run(workdir, step, data_dir=data_dir)
  correction = run.data.mean_correction()
  batches = ((steps.model_images(b, correction), b['mask'])
             for b in run.data.eval_split(run.plan.eval_sets[0]))
  return responses_of_batches(run.model, run.variables, batches, run.plan.image_shape)
