"""ResNet-152 on ImageNet with the paper's recipe (see configs/imagenet.py).

    python main.py --config=configs/imagenet_r152.py --workdir=/tmp/resnet_jax/imagenet_r152

Expected runtime (estimated as in configs/imagenet.py, not measured): 11.28e9 multiply-adds
per image, about 7.2 H100-hours of compute (54 minutes on 8);
the input pipeline of a 16-core host needs about 3 hours whatever the net.
"""

from configs import imagenet


def get_config():
  return imagenet.imagenet_config('resnet152')
