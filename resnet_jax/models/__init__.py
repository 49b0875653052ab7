"""Plain and residual networks in Flax Linen: the paper's (He et al. 2015), CIFAR and ImageNet
families, and the nets that followed it (docs/models.md).

* ``ResNet(stage_sizes, block, widths, stem, residual, shortcut, ...)`` builds a stem, stages of
  basic or bottleneck blocks, global average pooling and a fully connected classifier
  (``resnet.py``); its blocks are in ``blocks.py``, their layers in ``layers.py``.
* ``residual=False`` removes every shortcut (the paper's *plain* nets); nothing else changes.
* ``shortcut`` picks the paper's option 'A' (zero-padded identity), 'B' (projection where the shape
  changes) or 'C' (projection on every block).
* ``create_model(name, num_classes, **overrides)`` returns a named variant, e.g. ``resnet56``
  (``zoo.py``); ``layouts.to_layout`` moves variables between the unrolled and the scanned
  layouts of a net.

Variables are ``{'params', 'batch_stats'}``; params are always float32, ``dtype`` sets the
compute precision of the convolutions and BatchNorm, whose statistics are reduced in float32,
and the global average pool and the classifier compute in float32. The package imports nothing
else from the project, so it can be read, copied and used alone.
"""

from resnet_jax.models.blocks import BasicBlock, Block, BottleneckBlock, Shortcut
from resnet_jax.models.layers import (GroupedBatchNorm, conv_factory, drop_branch, he_normal,
                                      symmetric_padding)
from resnet_jax.models.layouts import stacked_stages, to_layout, unrolled
from resnet_jax.models.resnet import (BOTTLENECK_STRIDE_ON, CLASSIFIER, SCAN_MIN_BLOCKS,
                                      SHORTCUT_OPTIONS, ResNet)
from resnet_jax.models.zoo import (COMPUTE_DTYPES, MODEL_NAMES, MODEL_SPECS, config_problems,
                                   create_model, from_config, is_model_name, model_family,
                                   model_spec)

__all__ = ['BOTTLENECK_STRIDE_ON', 'CLASSIFIER', 'COMPUTE_DTYPES', 'MODEL_NAMES',
           'MODEL_SPECS', 'SCAN_MIN_BLOCKS', 'SHORTCUT_OPTIONS', 'BasicBlock', 'Block',
           'BottleneckBlock', 'GroupedBatchNorm', 'ResNet', 'Shortcut',
           'config_problems', 'conv_factory', 'create_model', 'drop_branch',
           'from_config', 'he_normal', 'is_model_name', 'model_family', 'model_spec',
           'stacked_stages', 'symmetric_padding', 'to_layout', 'unrolled']
