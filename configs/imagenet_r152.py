"""ResNet-152 on ImageNet with the paper's recipe (see configs/imagenet.py).

    python main.py --config=configs/imagenet_r152.py --workdir=/tmp/resnet_jax/imagenet_r152

Expected runtime: 90 epochs of 1.28M images; see benchmarks/RESULTS.md for measured throughput.
"""

from configs import imagenet


def get_config():
  return imagenet.imagenet_config('resnet152')
