"""Defaults shared by every experiment: the paper's CIFAR-10 recipe with ResNet-20.

Each experiment file imports ``get_config()`` from here and overrides what differs. Any field can
be overridden on the command line, e.g. ``--config.optimizer.learning_rate=0.05``; a mistyped
field name is an error.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  # The network: any name of resnet_jax.models.MODEL_NAMES and its options.
  config.model = ml_collections.ConfigDict(dict(
      name='resnet20',
      # Shortcut option 'A', 'B' or 'C'; None keeps the family's default (CIFAR A, ImageNet B).
      shortcut=config_dict.placeholder(str),
      bottleneck_stride_on='1x1',  # '1x1' (the paper's reference model) or '3x3' ("v1.5").
      dtype='float32',             # Compute dtype: 'float32' or 'bfloat16'; params stay float32.
      bn_momentum=0.9,
      bn_epsilon=1e-5,
      # 0: BatchNorm statistics over the global batch. N > 0: over fixed groups of N examples
      # ("virtual batch"), independent of the number of devices.
      bn_group_size=0,
      zero_init_last_bn=False,
      # Materialise each block's output once (models.fusion_barrier): None turns it on where it
      # pays, on CPU (a 1.1-1.2x faster train step); results are unchanged.
      fusion_barriers=config_dict.placeholder(bool),
  ))

  # The data: a tensorflow-datasets name and how to read it.
  config.dataset = ml_collections.ConfigDict(dict(
      name='cifar10',
      data_dir=config_dict.placeholder(str),  # tfds data_dir; None uses tfds' default.
      train_split='train',
      eval_split='test',
      image_size=32,
      augment=True,          # The paper's training augmentation.
      num_shards=0,          # Data shards; 0 = one per process. Fix it to make the data order
                             # independent of the number of hosts.
      shuffle_buffer=16_384,  # ImageNet: records per shuffled window (streaming_order.py).
      # digits, cifar10: keep the train split on the accelerators and augment it inside the
      # jitted step (resnet_jax/device_data.py); its own data order, a function of (seed, step).
      device_resident=False,
      # imagenet2012: subtract the per-pixel mean of the first mean_examples training images (the
      # paper) instead of the per-channel RGB mean (digits and cifar10 always use per-pixel).
      imagenet_per_pixel_mean=False,
      mean_examples=10_000,
  ))

  # Global batch sizes (split over all devices of all hosts).
  config.batch_size = 128
  config.eval_batch_size = 500

  # Duration: exactly one of total_steps and total_epochs.
  config.total_steps = 64_000
  config.total_epochs = config_dict.placeholder(float)

  # SGD with momentum, weight decay and step decay (the paper's CIFAR-10 recipe, Sec. 4.2).
  config.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=0.1,
      lr_reference_batch=0,        # > 0: scale the rate by batch_size / lr_reference_batch.
      momentum=0.9,
      nesterov=False,
      weight_decay=1e-4,
      weight_decay_on='all',       # 'all' (as the paper) or 'kernels' (no BN, no biases).
      lr_boundaries=(32_000, 48_000),
      lr_boundaries_unit='steps',  # 'steps' or 'epochs'.
      lr_decay_factor=0.1,
      # 'steps': divide at lr_boundaries. 'plateau': divide when the eval split's top-1 error
      # has not dropped by plateau_threshold (absolute) for plateau_patience evaluations.
      schedule='steps',
      plateau_patience=5,
      plateau_threshold=0.001,
      # Hold warmup_learning_rate for these first steps; None: the network's recipe
      # (config_lib.warmup_steps: 400 for ResNet-110/1202 and plain-110, as the paper; else 0).
      warmup_steps=config_dict.placeholder(int),
      warmup_learning_rate=0.01,
  ))

  # Train steps per jitted call (lax.scan), on both input paths (tf.data: that many batches
  # per call; device-resident: the batches are drawn inside the call). Calls end at every
  # logging, evaluation and checkpoint step, so make it divide those intervals.
  config.steps_per_call = 1

  # The dtype in which the devices average their gradients: 'float32' whatever the compute
  # dtype (4 bytes per parameter cross the interconnect), or 'bfloat16' (2 bytes, every gradient
  # and partial sum rounded to bfloat16). docs/training_at_scale.md.
  config.gradient_allreduce_dtype = 'float32'

  # Logging, evaluation and checkpoints (in steps).
  config.log_every_steps = 100
  config.eval_every_steps = 2_000
  config.checkpoint_every_steps = 2_000
  config.keep_checkpoints = 3
  return config
