"""Fine-tuning trained weights on a dataset of full-size images: ``configs/transfer.py:DATASET``.

    python main.py --config=configs/transfer.py:imagenette \
        --config.init_from=resnet50.pth --workdir=/tmp/resnet_jax/imagenette
    python main.py --config=configs/transfer.py:oxford_flowers102,linear \
        --config.init_from=/runs/resnet50 --config.model.bottleneck_stride_on=1x1 \
        --workdir=/tmp/resnet_jax/flowers_linear_probe
    python main.py --config=configs/transfer.py:image_folder --config.dataset.data_dir=ROOT \
        --config.init_from=resnet50.pth --workdir=/tmp/resnet_jax/my_photos

DATASET: a registered dataset of the ImageNet family with a train split (imagenet2012,
imagenette, oxford_flowers102, caltech101; ``resnet_jax/data/registry.py``), evaluated on its
validation split, or its test split where it has none; or ``image_folder``, a folder of one's own
photographs, ``ROOT/train/<class>/`` and ``ROOT/test/<class>/`` (docs/datasets.md). The source
(``init_from``): a torchvision state dict of the net (by default ResNet-50 with the stride on the
3x3 convolution, as torchvision's), a run's workdir or a ``Run.export`` file;
``--config.model.name`` picks another net. The classifier is re-initialised for the dataset's classes and every other variable is
loaded (docs/training.md, 'Fine-tuning').

The recipe is the paper's ImageNet one (SGD, momentum 0.9, weight decay 1e-4, scale
augmentation, 224 crops; bfloat16 compute) at a tenth of its rate for a short run, a fine-tuning
choice beyond the paper: batch 64 (BatchNorm statistics over all of it, on any number of
devices), lr 0.01 divided by 10 at epochs 20 and 25 of 30, an evaluation and a checkpoint every
epoch. OPTIONs: ``linear``, a linear probe (only the classifier learns:
``optimizer.backbone_lr_multiplier=0`` and frozen BatchNorm statistics); ``slow_backbone``, the
backbone at a tenth of the classifier's rate; ``frozen_bn``, BatchNorm normalises with the
source's running statistics and keeps them (for small batches). docs/deviations.md names each
departure.

Expected runtime, an estimate as in ``configs/imagenet.py``: 30 epochs cost 30 x N training
images x 3 (forward and backward) x 2 FLOPs per multiply-add (ResNet-50: 3.86e9 multiply-adds
per image); at 30% of an H100's bf16 rate that is about 2.3 s per 1,000 training images, and a
16-core host preprocesses about 10,500 images/s (benchmarks/RESULTS.md, section 5b), about 3 s
per 1,000, the input bounding ResNet-18 and ResNet-50 alike: on one H100 and a 16-core host,
oxford_flowers102 (1,020 training images) about 3 s, caltech101 (3,060) 9 s, imagenette (9,469)
30 s, imagenet2012 an hour. No GPU figure is measured yet.
"""

from configs import arguments, default
from resnet_jax.data import registry

DATASETS = (*(name for name, spec in registry.DATASETS.items()
               if spec.family == registry.IMAGENET and 'train' in spec.splits),
            registry.IMAGE_FOLDER)


def transfer_config(dataset: str):
  config = default.get_config()
  splits = registry.DATASETS[dataset].splits if dataset in registry.DATASETS else ('test',)
  config.model.update(name='resnet50', bottleneck_stride_on='3x3', dtype='bfloat16')
  config.dataset.update(name=dataset, train_split='train',
                        eval_split='validation' if 'validation' in splits else 'test',
                        image_size=224, augment=True)
  config.batch_size = 64
  config.eval_batch_size = 256
  config.total_steps = 0
  config.total_epochs = 30.0
  config.optimizer.update(learning_rate=0.01, lr_boundaries=(20, 25), lr_boundaries_unit='epochs')
  config.log_every_steps = 50
  config.eval_every_steps = config.checkpoint_every_steps = 0
  config.eval_every_epochs = config.checkpoint_every_epochs = 1.0
  return config


def linear(config):
  """A linear probe: the classifier learns, the backbone and its BatchNorm statistics stay."""
  config.optimizer.backbone_lr_multiplier = 0.0
  config.model.freeze_bn_stats = True


def slow_backbone(config):
  """The backbone learns at a tenth of the classifier's rate."""
  config.optimizer.backbone_lr_multiplier = 0.1


def frozen_bn(config):
  """BatchNorm normalises with the source's running statistics and keeps them."""
  config.model.freeze_bn_stats = True


OPTIONS = {'linear': linear, 'slow_backbone': slow_backbone, 'frozen_bn': frozen_bn}


def get_config(arg: str = 'imagenet2012'):
  dataset, options = arguments.parse(arg, file='configs/transfer.py', model_names=DATASETS,
                                     options=OPTIONS, what='dataset')
  config = transfer_config(dataset)
  for option in options:
    option(config)
  return config
