"""CIFAR-10 with the paper's recipe (Section 4.2), any CIFAR-family net.

SGD, momentum 0.9, weight decay 1e-4, batch 128, lr 0.1 divided by 10 at 32k and 48k iterations,
64k iterations; pad-4 random crops and flips; per-pixel mean subtraction. ResNet-110 and -1202
(and plain-110) warm up at lr 0.01 for the first 400 iterations, as the paper does: the warm-up
follows the network however it is named (``optimizer.warmup_steps=None``,
learning_rate.network_warmup_steps).

    python main.py --config=configs/cifar10.py:resnet56 --workdir=/tmp/resnet_jax/cifar10_r56

Append ``,validation`` (``configs/cifar10.py:resnet110,validation``) to train on the paper's 45k
images and evaluate on the held-out 5k. Prepare the data once with
``tfds build cifar10`` (see the README). Expected runtime: 64k steps of 128 images, 8.2M images;
ResNet-20 trains at ~350 images/s on a 2-core CPU (benchmarks/RESULTS.md), about 6.5 hours.
No GPU figure is measured yet; ``--config.dataset.device_resident=True`` is the fast path there.
"""

from configs import arguments, default


def validation(config):
  """The paper's split: train on 45k images, evaluate on the held-out 5k."""
  config.dataset.update(train_split='train[:45000]', eval_split='train[45000:]')


def cifar_config(arg: str, dataset: str):
  """The paper's CIFAR-10 recipe for ``MODEL[,validation]`` on ``dataset`` (cifar10, cifar100),
  the config file ``configs/<dataset>.py``."""
  model, options = arguments.parse(arg, file=f'configs/{dataset}.py',
                                   model_names=arguments.family_models('cifar'),
                                   options={'validation': validation})
  config = default.get_config()
  config.model.name = model
  config.dataset.name = dataset
  for option in options:
    option(config)
  return config


def get_config(arg: str = 'resnet20'):
  return cifar_config(arg, 'cifar10')
