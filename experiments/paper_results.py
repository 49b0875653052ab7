"""The papers' numbers that reports set beside ours (errors in %).

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016
(arXiv:1512.03385), and for the pre-activation study their "Identity Mappings in Deep Residual
Networks", ECCV 2016 (arXiv:1603.05027). ImageNet errors are on the validation set.
"""

CITATION = ('He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016 '
            '(arXiv:1512.03385)')

# Table 6: CIFAR-10 test error of the residual nets (best of 5 runs for ResNet-110).
CIFAR10_TEST_ERROR = {'resnet20': 8.75, 'resnet32': 7.51, 'resnet44': 7.17, 'resnet56': 6.97,
                      'resnet110': 6.43, 'resnet1202': 7.93}
# Table 6's (mean, std) over the same 5 runs, where it gives them: "6.43 (6.61 ± 0.16)".
CIFAR10_TEST_ERROR_MEAN_STD = {'resnet110': (6.61, 0.16)}

# Tables 2 and 3: 10-crop testing, (model, shortcut) -> (top-1, top-5); Table 2 gives no top-5.
IMAGENET_TEN_CROP = {
    ('plain18', None): (27.94, None), ('plain34', None): (28.54, 10.02),
    ('resnet18', 'A'): (27.88, None), ('resnet34', 'A'): (25.03, 7.76),
    ('resnet34', 'B'): (24.52, 7.46), ('resnet34', 'C'): (24.19, 7.40),
    ('resnet50', 'B'): (22.85, 6.71), ('resnet101', 'B'): (21.75, 6.05),
    ('resnet152', 'B'): (21.43, 5.71)}

# Table 4: single model, multi-scale fully convolutional testing, (top-1, top-5).
IMAGENET_MULTI_SCALE = {
    ('resnet34', 'B'): (21.84, 5.71), ('resnet34', 'C'): (21.53, 5.60),
    ('resnet50', 'B'): (20.74, 5.25), ('resnet101', 'B'): (19.87, 4.60),
    ('resnet152', 'B'): (19.38, 4.49)}

# The named recipes that followed the paper (configs/recipes.py): ResNet-50's ImageNet top-1
# error, centre crop, as each source publishes it, with the source.
RECIPE_TOP1_ERROR = {
    'torchvision_v2': (19.142, "torchvision's new recipe (80.858 % top-1; pytorch.org blog, "
                               "references/classification)"),
    'rsb_a1': (19.6, '"ResNet strikes back" A1 (Wightman, Touvron, Jégou 2021; 80.4 %)'),
    'rsb_a2': (20.2, '"ResNet strikes back" A2 (79.8 %)'),
    'rsb_a3': (21.9, '"ResNet strikes back" A3 (78.1 %)'),
}

PREACT_CITATION = ('He, Zhang, Ren, Sun, "Identity Mappings in Deep Residual Networks", ECCV 2016 '
                   '(arXiv:1603.05027)')
# Its comparison of the original unit with the pre-activation unit, CIFAR-10 test error (Tables 3
# and 4): 110 layers (basic blocks) and 164 and 1001 (bottleneck blocks). Its abstract quotes
# 4.62 for the pre-activation ResNet-1001; the comparison's figure is 4.92.
PREACT_CIFAR10_TEST_ERROR = {
    'resnet110': 6.61, 'preact_resnet110': 6.37,
    'resnet164': 5.93, 'preact_resnet164': 5.46,
    'resnet1001': 7.61, 'preact_resnet1001': 4.92}
