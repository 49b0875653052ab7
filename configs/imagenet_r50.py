"""ResNet-50 on ImageNet: an alias of ``configs/imagenet.py:resnet50[,OPTION]`` (see there).

    python main.py --config=configs/imagenet_r50.py --workdir=/tmp/resnet_jax/imagenet_r50
"""

from configs import imagenet


def get_config(option: str = ''):
  return imagenet.get_config(f'resnet50,{option}' if option else 'resnet50')
