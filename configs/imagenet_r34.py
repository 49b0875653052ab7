"""ResNet-34 on ImageNet with the paper's recipe; shortcut option by argument (Table 3).

    python main.py --config=configs/imagenet_r34.py --workdir=/tmp/resnet_jax/imagenet_r34
    python main.py --config=configs/imagenet_r34.py:A --workdir=/tmp/resnet_jax/imagenet_r34_a

Options A (zero-padded identity), B (projections where the shape changes; the default) and C
(projections everywhere). 90 epochs of 1.28M images: about 3.6e9 x 3 multiply-adds per image,
roughly 8-10 hours on 8 modern GPUs.
"""

from configs import imagenet


def get_config(shortcut: str = 'B'):
  return imagenet.imagenet_config('resnet34', shortcut=shortcut)
