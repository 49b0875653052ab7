"""Plain-34 on ImageNet with the paper's recipe (see configs/imagenet.py).

    python main.py --config=configs/imagenet_plain34.py --workdir=/tmp/resnet_jax/imagenet_plain34

Expected runtime: 90 epochs of 1.28M images; see benchmarks/RESULTS.md for measured throughput.
"""

from configs import imagenet


def get_config():
  return imagenet.imagenet_config('plain34')
