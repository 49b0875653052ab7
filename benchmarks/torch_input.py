"""torchvision's standard ImageNet transforms, the reference of the input benchmark."""


def import_torchvision():
  """torchvision, importable beside any torch build of its version.

  The package registry's torchvision is built against the CUDA torch; beside the CPU build its
  C++ operators (nms, roi_align) do not exist and registering their fake implementations fails.
  The transforms are pure Python and need none of them, so that registration is skipped.
  """
  import torch  # pylint: disable=import-outside-toplevel
  register_fake = torch.library.register_fake
  torch.library.register_fake = lambda *args, **kwargs: (lambda fn: fn)
  try:
    import torchvision  # pylint: disable=import-outside-toplevel
  finally:
    torch.library.register_fake = register_fake
  return torchvision


def train_transform(image_size: int = 224):
  """torchvision's standard ImageNet train transform, uint8 out."""
  transforms = import_torchvision().transforms
  return transforms.Compose([transforms.RandomResizedCrop(image_size),
                             transforms.RandomHorizontalFlip(), transforms.PILToTensor()])


def eval_transform(image_size: int = 224):
  """torchvision's standard ImageNet eval transform (shorter side 256, centre crop), uint8 out."""
  transforms = import_torchvision().transforms
  return transforms.Compose([transforms.Resize(image_size * 256 // 224),
                             transforms.CenterCrop(image_size), transforms.PILToTensor()])
