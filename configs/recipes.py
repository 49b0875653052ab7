"""The training recipes that followed the paper, each a dict of parts: {part: {dotted field:
value}}. A config applies a recipe with ``apply``; the digits ablation (experiments/sweeps.py)
removes one part at a time. Every recipe's source, published figure and departures are in its
comment here and in docs/deviations.md; the paper's recipe stays every config's default.

- ``TORCHVISION_V2``: torchvision's "new recipe" for ResNet-50, 80.858 % top-1 (pytorch.org blog
  "How to Train State-Of-The-Art Models Using TorchVision's Latest Primitives";
  references/classification/README.md): 600 epochs at batch 1024, SGD lr 0.5 momentum 0.9,
  cosine after 5 linear warm-up epochs, weight decay 2e-5 without BatchNorm, label smoothing 0.1,
  mixup 0.2 or cutmix 1.0 (one of the two per batch), TrivialAugmentWide, random erasing 0.1,
  random-resized crops at 176, evaluated at resize 232 / crop 224, EMA of the weights every 32
  steps.
- ``rsb(variant)``: "ResNet strikes back" (Wightman, Touvron, Jégou 2021, Table 1; timm's
  ``resnet50.a1_in1k`` ... ``a3_in1k``): A1 80.4 % in 600 epochs, A2 79.8 % in 300, A3 78.1 % in
  100 at 160 px train / 224 test. Batch 2048, LAMB, cosine after 5 warm-up epochs, binary
  cross-entropy with target threshold 0.2, mixup and cutmix, RandAugment (N 2, M 7; A3 M 6),
  random-resized crops, stochastic depth 0.05 (A1, A2), test crop ratio 0.95.
- ``CIFAR_MODERN``: a modern CIFAR-10 baseline in the manner of the CutMix paper's (Yun et al.
  2019) and of common reference repositories: 200 epochs of batch 128, SGD Nesterov 0.9, lr 0.1,
  weight decay 5e-4, cosine after one warm-up epoch, cutmix 1.0 on half the batches, the paper's
  pad-and-crop augmentation; no single published figure, so the report shows none.

Departures from each source (docs/deviations.md): no repeated augmentation (torchvision, RSB
A1/A2); warm-ups start at 0 and step every iteration (torchvision: 1 % of the rate, per epoch;
timm: 1e-6); torchvision's EMA is not reset during the warm-up; torchvision's ResNet-50 keeps
weight decay on its dense bias (here only kernels are decayed); RSB's RandAugment is timm's
(magnitude noise 0.5, its own operation set), here torchvision's at a fixed magnitude; optax's
LAMB scales every parameter by its trust ratio, timm's leaves the undecayed ones alone (RSB
clips gradients at norm 1 here for the same bound); BatchNorm statistics over groups of 32
images (the project's ImageNet default) where torchvision's 8 GPUs used 128 each and timm's 4
GPUs 512.
"""

import copy


def fields(name: str, recipe: dict, without: tuple[str, ...] = ()) -> dict:
  """The dotted fields of every part of ``recipe`` but those of ``without``, and ``recipe``: its
  name (with the parts left out), which the run records and the report reads."""
  unknown = set(without) - set(recipe)
  if unknown:
    raise ValueError(f'Parts {sorted(unknown)} are not in the recipe {name}; its parts are '
                     f'{", ".join(recipe)}.')
  chosen = {k: v for part, values in recipe.items() if part not in without
            for k, v in copy.deepcopy(values).items()}
  return {**chosen, 'recipe': name + ''.join(f' -{part}' for part in without)}


def apply(config, name: str, recipe: dict, without: tuple[str, ...] = ()) -> None:
  """Sets ``fields(name, recipe, without)`` on ``config``; a field the config lacks is an error
  (an unlocked ConfigDict would add it silently)."""
  was_locked = config.is_locked
  config.lock()
  try:
    config.update_from_flattened_dict(fields(name, recipe, without))
  finally:
    if not was_locked:
      config.unlock()


# The ImageNet recipes' net: ResNet-50 as torchvision and timm build it (stride on the 3x3).
_V15 = {'model.bottleneck_stride_on': '3x3'}

TORCHVISION_V2 = {
    'net': _V15,
    'schedule': {'total_epochs': 600.0, 'batch_size': 1024, 'optimizer.schedule': 'cosine',
                 'optimizer.end_learning_rate': 0.0, 'optimizer.linear_warmup_epochs': 5.0,
                 'optimizer.scaling_warmup_epochs': 0.0},
    'optimizer': {'optimizer.name': 'sgd', 'optimizer.learning_rate': 0.5,
                  'optimizer.lr_reference_batch': 1024, 'optimizer.momentum': 0.9,
                  'optimizer.weight_decay': 2e-5, 'optimizer.weight_decay_on': 'kernels'},
    'label_smoothing': {'label_smoothing': 0.1},
    'mixing': {'mixup.mixup_alpha': 0.2, 'mixup.cutmix_alpha': 1.0, 'mixup.prob': 1.0,
               'mixup.switch_prob': 0.5},
    'augmentation': {'dataset.train_crop': 'random_resized', 'dataset.pca_lighting': False,
                     'dataset.auto_augment': 'trivial_augment_wide',
                     'dataset.auto_augment_interpolation': 'bilinear',
                     'dataset.random_erasing': 0.1},
    'resolution': {'dataset.image_size': 176, 'dataset.eval_resize': 232,
                   'dataset.eval_crop': 224},
    # torchvision's --model-ema-decay 0.99998 at 1024 images a step, every 32 steps, over 600
    # epochs, adjusted as its train.py does: 1 - (1 - 0.99998) x 1024 x 32 / 600.
    'ema': {'ema.decay': 0.998908, 'ema.every': 32},
}

_RSB = {  # variant: (epochs, lr, weight decay, mixup alpha, RandAugment M, drop path, train px)
    'a1': (600.0, 5e-3, 0.01, 0.2, 7, 0.05, 224),
    'a2': (300.0, 5e-3, 0.02, 0.1, 7, 0.05, 224),
    'a3': (100.0, 8e-3, 0.02, 0.1, 6, 0.0, 160),
}


def rsb(variant: str) -> dict:
  """"ResNet strikes back" procedure ``variant`` ('a1', 'a2' or 'a3') as a recipe."""
  epochs, rate, decay, mixup_alpha, magnitude, drop_path, size = _RSB[variant]
  return {
      'net': _V15,
      'schedule': {'total_epochs': epochs, 'batch_size': 2048, 'optimizer.schedule': 'cosine',
                   'optimizer.end_learning_rate': 0.0, 'optimizer.linear_warmup_epochs': 5.0,
                   'optimizer.scaling_warmup_epochs': 0.0},
      'optimizer': {'optimizer.name': 'lamb', 'optimizer.learning_rate': rate,
                    'optimizer.lr_reference_batch': 2048, 'optimizer.weight_decay': decay,
                    'optimizer.weight_decay_on': 'kernels', 'optimizer.grad_clip_norm': 1.0},
      'loss': {'loss': 'binary_cross_entropy', 'bce_target_threshold': 0.2},
      'mixing': {'mixup.mixup_alpha': mixup_alpha, 'mixup.cutmix_alpha': 1.0, 'mixup.prob': 1.0,
                 'mixup.switch_prob': 0.5},
      'augmentation': {'dataset.train_crop': 'random_resized', 'dataset.pca_lighting': False,
                       'dataset.auto_augment': 'rand_augment', 'dataset.auto_augment_ops': 2,
                       'dataset.auto_augment_magnitude': magnitude,
                       'dataset.auto_augment_interpolation': 'bilinear'},
      'stochastic_depth': {'model.drop_path_rate': drop_path},
      # Test crop ratio 0.95: the centre 224 of the image resized to floor(224 / 0.95) = 235,
      # as timm computes it.
      'resolution': {'dataset.image_size': size, 'dataset.eval_resize': 235,
                     'dataset.eval_crop': 224},
  }


CIFAR_MODERN = {
    'schedule': {'total_steps': 0, 'total_epochs': 200.0, 'optimizer.schedule': 'cosine',
                 'optimizer.end_learning_rate': 0.0, 'optimizer.linear_warmup_epochs': 1.0,
                 'optimizer.warmup_steps': 0},
    'optimizer': {'optimizer.nesterov': True, 'optimizer.weight_decay': 5e-4},
    'mixing': {'mixup.cutmix_alpha': 1.0, 'mixup.prob': 0.5},
}

# The modern recipe scaled to the bundled digits (the ablation of experiments/sweeps.py): the
# digits recipe's 16 epochs and batch, with each modern part that suits 16x16 greyscale
# handwriting (no flips, no crops of a 16-pixel image: TrivialAugmentWide and erasing instead).
DIGITS_MODERN = {
    'cosine': {'optimizer.schedule': 'cosine', 'optimizer.end_learning_rate': 0.0,
               'optimizer.linear_warmup_epochs': 1.0, 'optimizer.warmup_steps': 0},
    'label_smoothing': {'label_smoothing': 0.1},
    'mixing': {'mixup.mixup_alpha': 0.2, 'mixup.cutmix_alpha': 1.0, 'mixup.prob': 1.0,
               'mixup.switch_prob': 0.5},
    'augmentation': {'dataset.auto_augment': 'trivial_augment_wide',
                     'dataset.random_erasing': 0.1},
    'ema': {'ema.decay': 0.99, 'ema.warmup': True},
}
