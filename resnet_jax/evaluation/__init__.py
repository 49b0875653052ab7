"""Evaluation: the loop, the paper's protocols, views, layer responses."""

# The paper's testing modes (evaluation/protocols.py); here, where the commands that name them
# read them without TensorFlow.
MODES = ('center', 'ten_crop', 'multi_scale')
