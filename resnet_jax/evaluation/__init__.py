"""Evaluation: the loop, the paper's protocols, views, layer responses."""
