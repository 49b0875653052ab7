"""Weights files that are no state dict of tensors, for the tests of what reads them.

``write(kind, path, marker)``: ``objects.pth`` and ``objects.npz`` hold an object that, were it
rebuilt, would create the file ``marker`` (what a malicious weights file does: any code could run
there); ``truncated.pth`` and ``empty.pth`` are a ``torch.save`` file cut short.
"""

import shutil

import numpy as np

KINDS = ('objects.pth', 'objects.npz', 'truncated.pth', 'empty.pth')


class _MakesAFile:
  """Rebuilt by pickle, creates ``path`` (a copy of this module's file)."""

  def __init__(self, path: str):
    self.path = path

  def __reduce__(self):
    return (shutil.copyfile, (__file__, self.path))


def write(kind: str, path: str, marker: str) -> str:
  """Writes a weights file of ``kind`` (one of ``KINDS``) to ``path``; returns ``path``."""
  import torch  # pylint: disable=import-outside-toplevel  (only these tests need it)
  if kind == 'objects.pth':
    torch.save({'conv1.weight': _MakesAFile(marker)}, path)
  elif kind == 'objects.npz':
    np.savez(path, weight=np.array([_MakesAFile(marker)], dtype=object))
  else:
    torch.save({'conv1.weight': torch.zeros(3)}, path)
    with open(path, 'r+b') as f:
      f.truncate({'truncated.pth': 100, 'empty.pth': 0}[kind])
  return path
