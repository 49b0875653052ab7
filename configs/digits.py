"""The quickstart: ResNet-20 on the bundled offline dataset (scikit-learn's 8x8 digits).

1,500 training and 297 test images of real handwriting, upsampled to 16x16, ship inside
scikit-learn: no download. The recipe is the paper's CIFAR one scaled down: SGD, momentum 0.9,
weight decay 1e-4, batch 64, lr 0.1 divided by 10 at 50% and 75% of 16 epochs.

    python main.py --config=configs/digits.py --workdir=/tmp/resnet_jax/digits

Any CIFAR-family net: ``--config=configs/digits.py:plain56``. Expected runtime on a 2-core CPU:
about a minute for a 20-layer net (test error 2 or 3 of 297 over seeds on an AMD EPYC; another
CPU rounds differently), 2-3 minutes for a 56-layer one; twice that where other work shares the
cores.
"""

from configs import arguments, default


def get_config(arg: str = 'resnet20'):
  model, _ = arguments.parse(arg, file='configs/digits.py',
                             model_names=arguments.family_models('cifar'))
  config = default.get_config()
  config.model.name = model
  config.dataset.update(name='digits', train_split='train', eval_split='test', image_size=16,
                        augment=False)
  config.batch_size = 64
  config.eval_batch_size = 300
  config.total_steps = 0
  config.total_epochs = 16.0
  # No warm-up for any net: the paper's 400 iterations are longer than this whole run.
  config.optimizer.update(lr_boundaries=(8, 12), lr_boundaries_unit='epochs', warmup_steps=0)
  config.log_every_steps = 23
  config.eval_every_steps = 92
  config.checkpoint_every_steps = 92
  return config
