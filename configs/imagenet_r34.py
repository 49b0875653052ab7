"""ResNet-34 on ImageNet with the paper's recipe; shortcut option by argument (Table 3).

    python main.py --config=configs/imagenet_r34.py --workdir=/tmp/resnet_jax/imagenet_r34
    python main.py --config=configs/imagenet_r34.py:A --workdir=/tmp/resnet_jax/imagenet_r34_a

Options A (zero-padded identity), B (projections where the shape changes; the default) and C
(projections everywhere).

Expected runtime (estimated as in configs/imagenet.py, not measured): 3.66e9 multiply-adds
per image, about 2.3 H100-hours of compute (17 minutes on 8);
the input pipeline of a 16-core host needs about 3 hours whatever the net.
"""

from configs import imagenet


def get_config(shortcut: str = 'B'):
  return imagenet.imagenet_config('resnet34', shortcut=shortcut)
