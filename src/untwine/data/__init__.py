"""Ground-truth factor data sets (spec §4): the FactorDataset interface, dSprites, and the registry."""

from untwine.data.base import FactorDataset, factors_to_index, index_to_factors
from untwine.data.dsprites import dsprites_dataset, load_dsprites_npz, render_dsprites
from untwine.data.registry import dataset_info, dataset_names, get_dataset
from untwine.data.stored import StoredDataset

__all__ = [
    "FactorDataset",
    "StoredDataset",
    "dataset_info",
    "dataset_names",
    "dsprites_dataset",
    "factors_to_index",
    "get_dataset",
    "index_to_factors",
    "load_dsprites_npz",
    "render_dsprites",
]
