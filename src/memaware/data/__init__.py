"""Data sets: the data model, file I/O, and generators."""
from .dataset import SPLITS, Dataset, Split, group_ids, group_name
from .io import atomic_write, load, save
from .synthetic import make_figure1, make_multiclass

__all__ = ["SPLITS", "Dataset", "Split", "group_ids", "group_name", "load", "save", "atomic_write",
           "make_figure1", "make_multiclass"]
