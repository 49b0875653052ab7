"""ResNet-50 on ImageNet with the paper's recipe (see configs/imagenet.py).

    python main.py --config=configs/imagenet_r50.py --workdir=/tmp/resnet_jax/imagenet_r50

Expected runtime (estimated as in configs/imagenet.py, not measured): 3.86e9 multiply-adds
per image, about 2.5 H100-hours of compute (19 minutes on 8);
the input pipeline of a 16-core host needs about 3 hours whatever the net.
"""

from configs import imagenet


def get_config():
  return imagenet.imagenet_config('resnet50')
