"""ResNet-18 on ImageNet with the paper's recipe (see configs/imagenet.py).

    python main.py --config=configs/imagenet_r18.py --workdir=/tmp/resnet_jax/imagenet_r18

Expected runtime (estimated as in configs/imagenet.py, not measured): 1.81e9 multiply-adds
per image, about 1.2 H100-hours of compute (9 minutes on 8);
the input pipeline of a 16-core host needs about 3 hours whatever the net.
"""

from configs import imagenet


def get_config():
  return imagenet.imagenet_config('resnet18')
