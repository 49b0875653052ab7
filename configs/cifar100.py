"""CIFAR-100 with the paper's CIFAR-10 recipe (Section 4.2), any CIFAR-family net.

The paper trains on CIFAR-10 only; CIFAR-100 has the same 50k/10k 32x32 images in 100 classes
and takes the recipe unchanged, as He et al.'s "Identity Mappings in Deep Residual Networks"
(2016) does: SGD, momentum 0.9, weight decay 1e-4, batch 128, lr 0.1 divided by 10 at 32k and
48k iterations, 64k iterations; pad-4 random crops and flips; per-pixel mean subtraction;
ResNet-110 and -1202 warm up at lr 0.01 for the first 400 iterations. The options are
``configs/cifar10.py``'s.

    python main.py --config=configs/cifar100.py:resnet56 --workdir=/tmp/resnet_jax/cifar100_r56

Append ``,validation`` to train on the first 45k training images and evaluate on the last 5k.
Prepare the data once with ``tfds build cifar100`` (docs/datasets.md). Expected runtime: that of
CIFAR-10 (the classifier's 100 outputs add next to nothing): 64k steps of 128 images, about 6.5
hours for ResNet-20 on a 2-core CPU.
"""

from configs import cifar10


def get_config(arg: str = 'resnet20'):
  return cifar10.cifar_config(arg, 'cifar100')
