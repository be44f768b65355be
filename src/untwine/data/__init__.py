"""Ground-truth factor data sets (spec §4): the FactorDataset interface, the study's data sets, and the registry."""

from untwine.data.base import FactorDataset, factors_to_index, index_to_factors
from untwine.data.cars3d import load_cars3d
from untwine.data.dsprites import dsprites_dataset, load_dsprites_npz, render_dsprites
from untwine.data.mpi3d import load_mpi3d
from untwine.data.registry import dataset_info, dataset_names, get_dataset
from untwine.data.shapes3d import load_shapes3d
from untwine.data.smallnorb import load_smallnorb
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
    "load_cars3d",
    "load_dsprites_npz",
    "load_mpi3d",
    "load_shapes3d",
    "load_smallnorb",
    "render_dsprites",
]
