"""Every field of a run's config, with its default and its comment: the paper's CIFAR-10 recipe
with ResNet-20.

The experiment files (``configs/*.py``, through ``configs/default.py``) start from it and
override what differs; ``workdirs.load_config`` lays a saved ``config.json`` over it, so a run
saved before a field existed reads that field's default. Any field can be overridden on the
command line, e.g. ``--config.optimizer.learning_rate=0.05``; a mistyped field name is an error.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  # The named recipe the config applies (configs/recipes.py, e.g. 'torchvision_v2'; ' -PART' for
  # each part an ablation left out); None: the paper's recipe. A record: the fields decide.
  config.recipe = config_dict.placeholder(str)

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
      # BatchNorm normalises with its running averages in training too and keeps them (for
      # fine-tuning on small batches; docs/training.md); the paper: False.
      freeze_bn_stats=False,
      # The options of the nets after the paper (docs/models.md); None keeps the net's own.
      # Stochastic depth: the last block's branch is dropped per example with this probability,
      # earlier ones linearly less (Huang et al. 2016); residual nets only.
      drop_path_rate=config_dict.placeholder(float),
      dropout_rate=config_dict.placeholder(float),  # Between a branch's convolutions (WRN).
      deep_stem=config_dict.placeholder(bool),  # ResNet-C's three 3x3 stem convolutions.
      avg_down=config_dict.placeholder(bool),   # ResNet-D's average pool before projections.
      # Run a stage's blocks after its first as one scan (stacked variables): compiles in
      # seconds at any depth. None: in the stages of at least models.SCAN_MIN_BLOCKS blocks.
      scan_blocks=config_dict.placeholder(bool),
  ))

  # The data: a tensorflow-datasets name and how to read it.
  config.dataset = ml_collections.ConfigDict(dict(
      name='cifar10',
      data_dir=config_dict.placeholder(str),  # tfds data_dir; None uses tfds' default.
      train_split='train',
      eval_split='test',
      image_size=32,
      augment=True,          # The paper's training augmentation (the modern parts below are
                             # apart from it).
      num_shards=0,          # Data shards; 0 = one per process. Fix it to make the data order
                             # independent of the number of hosts.
      shuffle_buffer=16_384,  # ImageNet: records per shuffled window (streaming_order.py).
      # digits, cifar10: keep the train split on the accelerators and augment it inside the
      # jitted step (resnet_jax/data/device_resident.py); its own data order, a function of
      # (seed, step).
      device_resident=False,
      # imagenet2012: subtract the per-pixel mean of the first mean_examples training images (the
      # paper) instead of the per-channel RGB mean (digits and cifar10 always use per-pixel).
      imagenet_per_pixel_mean=False,
      mean_examples=10_000,
      # Modern training augmentations (docs/training.md, "Modern input augmentations"); all off
      # by default, the paper's recipe. Each draws from its own key, a function of (seed, epoch,
      # position) as the paper's augmentation is.
      # The train crop of the streamed (ImageNet-family) datasets: 'scale' (the paper's scale
      # augmentation) or 'random_resized' (Inception-style, torchvision's RandomResizedCrop: an
      # area fraction uniform in crop_scale and an aspect ratio log-uniform in crop_ratio, up
      # to 10 draws, else the centre crop), resized to image_size: area averaging where it
      # shrinks both ways, else bilinear, antialiased (torchvision's).
      train_crop='scale',
      crop_scale=(0.08, 1.0),
      crop_ratio=(3 / 4, 4 / 3),
      pca_lighting=True,  # Streamed datasets: AlexNet's PCA lighting noise (the paper).
      # On the uint8 crop after the flip (tf.data paths): None, 'rand_augment' (RandAugment:
      # auto_augment_ops operations at magnitude bin auto_augment_magnitude) or
      # 'trivial_augment_wide' (TrivialAugmentWide: one operation at a random bin), with
      # torchvision's operations and magnitudes over auto_augment_bins bins.
      auto_augment=config_dict.placeholder(str),
      auto_augment_ops=2,
      auto_augment_magnitude=9,
      auto_augment_bins=31,
      # The geometric operations' sampling: 'nearest' (torchvision's classes' default) or
      # 'bilinear' (torchvision's reference training script, --interpolation bilinear).
      auto_augment_interpolation='nearest',
      # Random erasing (torchvision's RandomErasing) with this probability, last: a box of area
      # fraction uniform in erasing_scale and aspect ratio log-uniform in erasing_ratio set to
      # 0 after normalisation (the mean; streamed: the RGB mean rounded to uint8). All paths.
      random_erasing=0.0,
      erasing_scale=(0.02, 0.33),
      erasing_ratio=(0.3, 3.3),
      # Streamed datasets' evaluation: the centre eval_crop at shorter side eval_resize (e.g.
      # torchvision's 232 / 224, or FixRes' train 176 / test 224 with image_size=176). None:
      # 256 and image_size, the paper's.
      eval_resize=config_dict.placeholder(int),
      eval_crop=config_dict.placeholder(int),
  ))

  # Evaluation sets beside dataset.eval_split, evaluated with it at every evaluation:
  # 'NAME=DATASET:SPLIT' or 'DATASET:SPLIT' (NAME = DATASET), e.g. ImageNet-V2 beside the
  # validation set: --config.extra_evals=v2=imagenet_v2:test, or several as a tuple,
  # "--config.extra_evals=('v2=imagenet_v2:test', 'minival=imagenet2012:train[:10000]')".
  # Each set's summaries are NAME/loss, NAME/error_top1 and NAME/error_top5 (the main split's
  # stay eval_*, and the plateau schedule reads only those). A dataset must have the classes,
  # channels and preprocessing of dataset.name; it is read from dataset.data_dir and
  # preprocessed as the eval split is, with the training split's mean (docs/evaluation.md).
  config.extra_evals = ()

  # Global batch sizes (split over all devices of all hosts).
  config.batch_size = 128
  config.eval_batch_size = 500

  # Duration: exactly one of total_steps and total_epochs.
  config.total_steps = 64_000
  config.total_epochs = config_dict.placeholder(float)

  # SGD with momentum, weight decay and step decay (the paper's CIFAR-10 recipe, Sec. 4.2).
  config.optimizer = ml_collections.ConfigDict(dict(
      # 'sgd': SGD with momentum, weight decay added to the gradient (the paper). 'lars': You et
      # al.'s layer-wise rates for large batches, on the kernels only (needs
      # weight_decay_on='kernels'; BatchNorm parameters and biases take plain momentum SGD).
      # 'adamw', 'lamb': optax's AdamW and LAMB, weight decay decoupled from the gradient and
      # multiplied by the rate (as PyTorch's AdamW and timm's Lamb), on weight_decay_on's
      # parameters; momentum and nesterov are SGD's and LARS's only.
      name='sgd',
      learning_rate=0.1,
      lr_reference_batch=0,        # > 0: scale the rate by batch_size / lr_reference_batch.
      # Where the scaled rate is above learning_rate (batch_size > lr_reference_batch): reach it
      # by a linear ramp from learning_rate over these first epochs (Goyal et al. 2017); 0: start
      # at the scaled rate. At or below the reference batch there is nothing to ramp.
      scaling_warmup_epochs=5.0,
      momentum=0.9,
      nesterov=False,
      weight_decay=1e-4,
      weight_decay_on='all',       # 'all' (as the paper) or 'kernels' (no BN, no biases).
      lr_boundaries=(32_000, 48_000),
      lr_boundaries_unit='steps',  # 'steps' or 'epochs'.
      lr_decay_factor=0.1,
      # 'steps': divide at lr_boundaries. 'plateau': divide when the eval split's top-1 error
      # has not dropped by plateau_threshold (absolute) for the patience (exactly one of
      # plateau_patience evaluations and plateau_patience_epochs). 'cosine', 'polynomial': from
      # the rate after the warm-up down to end_learning_rate at the last step, along half a
      # cosine or (1 - t/T)**decay_power.
      schedule='steps',
      plateau_patience=5,
      plateau_patience_epochs=config_dict.placeholder(float),
      plateau_threshold=0.001,
      end_learning_rate=0.0,
      decay_power=2.0,
      # Hold warmup_learning_rate for these first steps; None: the network's recipe
      # (learning_rate.network_warmup_steps: 400 for ResNet-110/1202 and plain-110, as the
      # paper; else 0).
      # A run has one warm-up: this one, or the ramp to a scaled rate (scaling_warmup_epochs);
      # where both would apply, validation asks to switch one off.
      warmup_steps=config_dict.placeholder(int),
      warmup_learning_rate=0.01,
      # A linear warm-up from 0 to the rate (the scaled one, if it is) over these first steps or
      # epochs, at most one of the two non-zero; then the schedule, the cosine and polynomial
      # decays starting where it ends (torchvision's and timm's recipes warm up so). 0: none. It
      # excludes the two warm-ups above: set warmup_steps=0, and scaling_warmup_epochs=0 where
      # the rate is scaled up.
      linear_warmup_steps=0,
      linear_warmup_epochs=0.0,
      # AdamW and LAMB: the decay rates of the gradient's first and second moments, and the
      # epsilon added to the root of the second; None: the optimizer's own (AdamW 1e-8, LAMB
      # 1e-6, as optax and timm).
      adam_b1=0.9,
      adam_b2=0.999,
      adam_eps=config_dict.placeholder(float),
      # Every optimizer: scale the (averaged) gradient down to this global L2 norm where it is
      # larger, before weight decay and momentum (timm's --clip-grad; its Lamb clips at 1.0).
      # None: no clipping.
      grad_clip_norm=config_dict.placeholder(float),
      # LARS (name='lars'): the trust coefficient and the epsilon of its layer-wise ratio.
      lars_trust_coefficient=0.001,
      lars_epsilon=0.0,
      # Every update outside the classifier (fc) times this: the backbone's rate relative to the
      # classifier's, which is the logged train_learning_rate; 0 freezes the backbone. 1: the
      # paper's single rate.
      backbone_lr_multiplier=1.0,
  ))

  # Start from trained weights (docs/training.md, 'Fine-tuning'): a workdir (its latest
  # checkpoint, or init_from_step), a .msgpack file that Run.export writes, or a torchvision
  # state dict (.pth, .pt or .npz) of the config's model (resnet18 ... resnet152). Every variable
  # whose path and shape match is loaded, the classifier is re-initialised if the number of
  # classes differs, and anything else that does not fit is an error. The step, optimizer state
  # and data position start fresh; a restart resumes from the run's own checkpoints.
  config.init_from = config_dict.placeholder(str)
  config.init_from_step = config_dict.placeholder(int)
  # Variables that keep their fresh initialisation on purpose: regular expressions matched in
  # full against paths without the collection, e.g. ('fc/.*',) or ('stage3_.*', 'fc/.*').
  config.init_exclude = ()

  # The training loss: cross-entropy against targets smoothed by this much towards uniform
  # (Szegedy et al. 2016); it is the loss minimised and logged as train_loss. Evaluation's loss
  # stays the plain cross-entropy.
  config.label_smoothing = 0.0
  # The training loss (resnet_jax/losses.py): 'cross_entropy' (softmax; the paper) or
  # 'binary_cross_entropy' (a sigmoid per class against the same soft targets, timm's
  # BinaryCrossEntropy of the "ResNet strikes back" recipes). Evaluation's loss stays the plain
  # cross-entropy.
  config.loss = 'cross_entropy'
  # binary_cross_entropy only: targets above this become 1 and the others 0, after smoothing and
  # mixing (timm's target_threshold; RSB uses 0.2); None keeps the soft targets.
  config.bce_target_threshold = config_dict.placeholder(float)
  # binary_cross_entropy only: sum the classes' losses (timm's --bce-sum) instead of their mean
  # (timm's default, over batch and classes alike).
  config.bce_sum_classes = False

  # Mixup and cutmix of each training batch, on the devices inside the train step
  # (resnet_jax/mixing.py; timm's Mixup in mode 'batch', torchvision's references): one
  # coefficient per batch, each example mixed with its neighbour (the batch rolled by one), the
  # targets (smoothed by label_smoothing first) mixed alike; the top-k errors stay counted
  # against the batch's own labels. The draws are a function of (seed, step), whatever the
  # number of devices. Both alphas 0: off (the paper).
  config.mixup = ml_collections.ConfigDict(dict(
      mixup_alpha=0.0,   # > 0: mixup, lam ~ Beta(alpha, alpha) (torchvision's recipe: 0.2).
      cutmix_alpha=0.0,  # > 0: cutmix, lam ~ Beta(alpha, alpha), then the box's (recipe: 1.0).
      prob=1.0,          # The chance that a batch is mixed at all.
      switch_prob=0.5,   # Both on: the chance that a mixed batch takes cutmix, not mixup.
  ))

  # Weight averaging (docs/training.md, 'Weight averaging (EMA)'): an exponential moving average
  # of the parameters and BatchNorm statistics, kept in the checkpoints and evaluated beside the
  # trained weights at every evaluation, its summaries under 'ema_' + the set's prefix
  # (ema_eval_error_top1, ema_NAME/error_top1). Chosen with load_run(workdir, weights='ema'),
  # tools/evaluate.py --weights=ema, and so Run.export. After every `every`-th step:
  # average <- d * average + (1 - d) * weights, starting from the weights of step 0.
  config.ema = ml_collections.ConfigDict(dict(
      decay=0.0,     # d per averaging update, in [0, 1); 0: no averaging (the paper).
      # TensorFlow's warm-up (tf.train.ExponentialMovingAverage with num_updates):
      # d = min(decay, (1 + n) / (10 + n)), n the averaging updates made before.
      warmup=False,
      every=1,       # Average every this many steps (torchvision's model_ema_steps).
  ))

  # Train steps per jitted call (lax.scan), on both input paths (tf.data: that many batches
  # per call; device-resident: the batches are drawn inside the call). Calls end at every
  # logging, evaluation and checkpoint step, so make it divide those intervals.
  config.steps_per_call = 1

  # The dtype in which the devices average their gradients: 'float32' whatever the compute
  # dtype (4 bytes per parameter cross the interconnect), or 'bfloat16' (2 bytes, every gradient
  # and partial sum rounded to bfloat16). docs/training_at_scale.md.
  config.gradient_allreduce_dtype = 'float32'

  # Logging (in steps), evaluation and checkpoints: each in steps or in epochs, exactly one of
  # the pair (the other 0/None), resolved to steps once (run_plan.resolve).
  config.log_every_steps = 100
  config.eval_every_steps = 2_000
  config.eval_every_epochs = config_dict.placeholder(float)
  config.checkpoint_every_steps = 2_000
  config.checkpoint_every_epochs = config_dict.placeholder(float)
  config.keep_checkpoints = 3

  # > 0: trace this many train steps (at most those left) with jax.profiler, from the end of the
  # first call (after compiling), into workdir/plugins/profile for TensorBoard's profile plugin;
  # process 0 only.
  config.profile_steps = 0
  # On CPU devices, materialise every block's input once in the train step
  # (parallel/cpu_workarounds.py): XLA:CPU recomputes it otherwise. Results are unchanged.
  config.cpu_fusion_barriers = True
  return config
