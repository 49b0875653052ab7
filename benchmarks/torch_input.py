"""torchvision's ImageNet transforms, the reference of the input benchmark: the standard train
and eval transforms and the train transform of torchvision's "new recipe" (transforms v2)."""


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
    import torchvision.transforms.v2  # pylint: disable=import-outside-toplevel,unused-import
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


def train_v2_transform(image_size: int = 176, erasing: float = 0.1):
  """The train transform of torchvision's "new recipe" (references/classification, transforms
  v2): RandomResizedCrop, flip, TrivialAugmentWide, random erasing; uint8 out, so the float
  conversion and normalisation before the erasing are left out (the project's happen on the
  device)."""
  v2 = import_torchvision().transforms.v2
  return v2.Compose([v2.RandomResizedCrop(image_size, antialias=True),
                     v2.RandomHorizontalFlip(), v2.TrivialAugmentWide(), v2.PILToTensor(),
                     v2.RandomErasing(erasing)])
