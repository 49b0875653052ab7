"""Defaults shared by every experiment: the paper's CIFAR-10 recipe with ResNet-20.

Each experiment file imports ``get_config()`` from here and overrides what differs. The fields,
each with its comment, are in ``resnet_jax/config_defaults.py``, where the package also reads
them: a run saved before a field existed is read with that field's default
(``workdirs.load_config``).
"""

from resnet_jax.config_defaults import get_config  # pylint: disable=unused-import  # noqa: F401
