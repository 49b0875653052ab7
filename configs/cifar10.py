"""CIFAR-10 with the paper's recipe (Section 4.2), any CIFAR-family net; wide ResNets with theirs.

SGD, momentum 0.9, weight decay 1e-4, batch 128, lr 0.1 divided by 10 at 32k and 48k iterations,
64k iterations; pad-4 random crops and flips; per-pixel mean subtraction. ResNet-110 and -1202
(and plain-110) warm up at lr 0.01 for the first 400 iterations, as the paper does: the warm-up
follows the network however it is named (``optimizer.warmup_steps=None``,
learning_rate.network_warmup_steps).

The nets of "Identity Mappings in Deep Residual Networks" (He et al. 2016: ``resnet164``,
``resnet1001``, ``preact_resnet110``, ``preact_resnet164``, ``preact_resnet1001``) take the same
recipe, as that paper does, with the 400-iteration warm-up for every one of them ("for all CIFAR
experiments"). Wide ResNets (``wrn16_8``, ``wrn28_10``, ``wrn40_4``) take Zagoruyko and
Komodakis's: 200 epochs of batch 128, SGD with Nesterov momentum 0.9, weight decay 5e-4, lr 0.1
multiplied by 0.2 at epochs 60, 120 and 160, no warm-up; ``,dropout`` adds their dropout of 0.3
between the convolutions. docs/deviations.md names what differs from each paper.

    python main.py --config=configs/cifar10.py:resnet56 --workdir=/tmp/resnet_jax/cifar10_r56
    python main.py --config=configs/cifar10.py:preact_resnet164 --workdir=/tmp/resnet_jax/pre164
    python main.py --config=configs/cifar10.py:wrn28_10,dropout --workdir=/tmp/resnet_jax/wrn

Append ``,validation`` (``configs/cifar10.py:resnet110,validation``) to train on the paper's 45k
images and evaluate on the held-out 5k; ``,modern`` trains with a modern baseline recipe instead
of the paper's (``configs/recipes.py``: 200 epochs, cosine, Nesterov, weight decay 5e-4, cutmix;
docs/training.md, "Named recipes"). Prepare the data once with
``tfds build cifar10`` (see the README). Expected runtime: 64k steps of 128 images, 8.2M images;
ResNet-20 trains at ~350 images/s on a 2-core CPU (benchmarks/RESULTS.md), about 6.5 hours.
The other nets cost as their multiply-adds per image (docs/models.md): ResNet-164 about what
ResNet-110 does, ResNet-1001 about 6x, WRN-28-10 about 21x, over 200 epochs (10M images).
No GPU figure is measured yet; ``--config.dataset.device_resident=True`` is the fast path there.
"""

from configs import arguments, default, recipes

# Zagoruyko and Komodakis's dropout between a wide block's convolutions (their CIFAR value).
WIDE_DROPOUT = 0.3


def validation(config):
  """The paper's split: train on 45k images, evaluate on the held-out 5k."""
  config.dataset.update(train_split='train[:45000]', eval_split='train[45000:]')


def dropout(config):
  """Wide ResNets' dropout between the convolutions of each block."""
  config.model.dropout_rate = WIDE_DROPOUT


def wide_recipe(config):
  """Zagoruyko and Komodakis's CIFAR recipe: 200 epochs, Nesterov momentum, weight decay 5e-4,
  lr 0.1 multiplied by 0.2 at epochs 60, 120 and 160."""
  config.total_steps, config.total_epochs = 0, 200.0
  config.optimizer.update(nesterov=True, weight_decay=5e-4, lr_boundaries=(60, 120, 160),
                          lr_boundaries_unit='epochs', lr_decay_factor=0.2)


def modern(config):
  """A modern baseline instead of the paper's recipe (``recipes.CIFAR_MODERN``): 200 epochs,
  cosine, Nesterov, weight decay 5e-4, cutmix on half the batches."""
  recipes.apply(config, 'cifar_modern', recipes.CIFAR_MODERN)


def is_wide(model: str) -> bool:
  """A CIFAR wide ResNet (``wrn{depth}_{k}``)."""
  return model.startswith('wrn')


def cifar_config(arg: str, dataset: str):
  """The paper's CIFAR-10 recipe, or the wide ResNets' for them, for ``MODEL[,OPTION...]`` on
  ``dataset`` (cifar10, cifar100), the config file ``configs/<dataset>.py``."""
  model, options = arguments.parse(arg, file=f'configs/{dataset}.py',
                                   model_names=arguments.family_models('cifar'),
                                   options={'validation': validation, 'dropout': dropout,
                                            'modern': modern})
  if dropout in options and not is_wide(model):
    raise ValueError(f'configs/{dataset}.py:{arg}: dropout is the wide ResNets\' option; '
                     f'{model} is not one.')
  config = default.get_config()
  config.model.name = model
  config.dataset.name = dataset
  if is_wide(model):
    wide_recipe(config)
  for option in options:
    option(config)
  return config


def get_config(arg: str = 'resnet20'):
  return cifar_config(arg, 'cifar10')

