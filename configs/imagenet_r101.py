"""ResNet-101 on ImageNet with the paper's recipe (see configs/imagenet.py).

    python main.py --config=configs/imagenet_r101.py --workdir=/tmp/resnet_jax/imagenet_r101

Expected runtime (estimated as in configs/imagenet.py, not measured): 7.57e9 multiply-adds
per image, about 4.8 H100-hours of compute (36 minutes on 8);
the input pipeline of a 16-core host needs about 3 hours whatever the net.
"""

from configs import imagenet


def get_config():
  return imagenet.imagenet_config('resnet101')
