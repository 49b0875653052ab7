"""torchvision for the tests, importable next to the CPU build of torch.

The registry's torchvision wheel is built against the CUDA build of torch; next to the CPU build
its C++ ops do not load, and registering their fake (meta) kernels then fails at import
(``operator torchvision::nms does not exist``). The model and transform code the tests use is
pure Python, so ``import_torchvision`` makes ``torch.library.register_fake`` a no-op decorator
while torchvision is first imported. With a matching build the import is left as it is.
"""

import importlib
import sys
from unittest import mock

import torch


def import_torchvision():
  """The ``torchvision`` module (its models and transforms; not its C++ ops)."""
  if 'torchvision' in sys.modules:
    return sys.modules['torchvision']
  try:
    return importlib.import_module('torchvision')
  except RuntimeError as error:
    if 'does not exist' not in str(error):
      raise
  for name in [n for n in sys.modules if n == 'torchvision' or n.startswith('torchvision.')]:
    del sys.modules[name]
  with mock.patch.object(torch.library, 'register_fake', lambda *a, **k: (lambda fn: fn)):
    return importlib.import_module('torchvision')
