"""The multi-level radiance field (torch): octree lookup, summed level features, decoder MLP.

Per sample and level the field finds the occupied cell holding the point, interpolates the
features of its 8 corners trilinearly and adds the result to the levels before it (a sparse
Laplacian pyramid, paper section 4.3). A level without a cell at the point adds zero (section
7.1), so any point inside a coarsest-level cell can be evaluated at any level of detail.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal, Protocol, cast

import numpy as np
import torch
from torch import nn

from ..asset.field_data import VIEW_ENCODING_DIM, VIEW_FREQUENCIES, FieldData, MLPWeights
from ..asset.octree import SparseOctree
from ..limits import (
    DEFAULT_BITWIDTH,
    DEFAULT_FEATURE_DIM,
    DEFAULT_MAX_LEVEL,
    DEFAULT_MIN_LEVEL,
    MAX_FEATURE_DIM,
    MAX_LEVEL,
    MAX_TRAIN_BITWIDTH,
    SAMPLES_PER_VOXEL,
)
from .features import (
    CodebookFeatures,
    DenseFeatures,
    FeatureStore,
    FrozenFeatures,
    HashedFeatures,
)
from .render.accel import LevelIndex, OctreeAccel
from .shading import LevelLookup, ShadeSamples, ShadingInputs, summed_features

TrainableStore = Literal["dense", "codebook", "hashed"]
HIDDEN_DIM = 128
DECODE_CHUNK_ROWS = 1 << 13  # interpolation + MLP of 154k samples: 0.66x one block


@dataclass(frozen=True)
class FieldConfig:
    """Architecture choices that fix the parameter layout (stored in checkpoints)."""

    min_level: int = DEFAULT_MIN_LEVEL
    max_level: int = DEFAULT_MAX_LEVEL
    feature_dim: int = DEFAULT_FEATURE_DIM
    store: TrainableStore = "codebook"
    bitwidth: int = DEFAULT_BITWIDTH
    hidden_dim: int = HIDDEN_DIM

    def __post_init__(self) -> None:
        if not 0 <= self.min_level <= self.max_level <= MAX_LEVEL:
            raise ValueError(f"need 0 <= min_level <= max_level <= {MAX_LEVEL}, got {self}")
        if self.store not in ("dense", "codebook", "hashed"):
            raise ValueError(f"store must be dense, codebook or hashed, got {self.store!r}")
        if self.store != "dense" and not 1 <= self.bitwidth <= MAX_TRAIN_BITWIDTH[self.store]:
            raise ValueError(
                f"bitwidth must be in 1..{MAX_TRAIN_BITWIDTH[self.store]} for the {self.store} "
                f"store, got {self.bitwidth}"
            )
        if not 1 <= self.feature_dim <= MAX_FEATURE_DIM:
            raise ValueError(f"feature_dim must be in 1..{MAX_FEATURE_DIM}, got {self.feature_dim}")

    @property
    def num_lods(self) -> int:
        return self.max_level - self.min_level + 1

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def encode_view_directions(directions: torch.Tensor) -> torch.Tensor:
    """Torch twin of :func:`core.field_data.encode_view_directions` (27 values per direction)."""
    parts = [directions]
    for frequency in range(VIEW_FREQUENCIES):
        scaled = directions * (2.0**frequency)
        parts += [torch.sin(scaled), torch.cos(scaled)]
    return torch.cat(parts, dim=-1)


def mark_touched(ids: torch.Tensor, num_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Which of ``num_rows`` rows ``ids`` touches ([num_rows] bool) and ``ids`` renumbered into
    the touched rows in order, in O(num_rows) with a mask instead of a sort (``torch.unique``
    dominated CPU step time), and with no host sync: the number of touched rows is
    ``touched.sum()``, which :func:`touched_rows` needs on the host."""
    touched = torch.zeros(num_rows, dtype=torch.bool, device=ids.device)
    touched[ids.reshape(-1)] = True
    position = torch.cumsum(touched, 0) - 1
    return touched, position[ids]


def touched_rows(touched: torch.Tensor, count: int) -> torch.Tensor:
    """The indices of the ``count`` rows marked in ``touched``, ascending (``nonzero`` of a
    mask whose size is known, so without a host sync): each touched row is scattered to its
    rank, every other one to a spare last slot."""
    rank = torch.where(touched, torch.cumsum(touched, 0) - 1, count)
    rows = torch.empty(count + 1, dtype=torch.long, device=touched.device)
    rows.scatter_(0, rank, torch.arange(touched.numel(), device=touched.device))
    return rows[:count]


class FeatureGather(Protocol):
    """The two steps of a level's feature lookup that a backend may replace with kernels (the
    fused CUDA ones are :class:`core.neural.render.gpu.ops.KernelGather`)."""

    def corners(
        self, index: LevelIndex, points: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cell per point (-1 where unallocated), its corner ids [N, 8] and trilinear weights
        [N, 8]; unallocated points get weight 0 and cell 0's corner ids."""
        ...

    def interpolate(
        self, weights: torch.Tensor, rows: torch.Tensor, table: torch.Tensor
    ) -> torch.Tensor:
        """``sum_c weights[:, c] * table[rows[:, c]]`` [N, k], differentiable in ``table``."""
        ...

    def scatter_add(
        self, weights: torch.Tensor, rows: torch.Tensor, grad: torch.Tensor, into: torch.Tensor
    ) -> None:
        """``into[rows[:, c]] += weights[:, c] * grad`` in place: the transpose of
        :meth:`interpolate`, for :class:`~.shading.ShadeSamples`' backward."""
        ...


class TorchGather:
    """The reference :class:`FeatureGather`. The interpolation is one ``embedding_bag`` (a
    weighted sum of 8 rows per point, fused): on one CPU thread 3.3x faster than the per-corner
    ``index_select`` and in-place multiply-add it replaced, with the same sums. Its transpose,
    for the backward, is one ``index_add`` per corner: 1.7x faster than a single one over all
    ``[N * 8]`` rows, and 4x faster than ``embedding_bag``'s own backward."""

    def corners(
        self, index: LevelIndex, points: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cell, weights = index.locate(points)
        corner_ids = index.cell_corners.index_select(0, torch.clamp(cell, min=0))
        return cell, corner_ids, weights * (cell >= 0)[:, None]

    def interpolate(
        self, weights: torch.Tensor, rows: torch.Tensor, table: torch.Tensor
    ) -> torch.Tensor:
        return torch.nn.functional.embedding_bag(
            rows, table, per_sample_weights=weights.to(table.dtype), mode="sum"
        )

    def scatter_add(
        self, weights: torch.Tensor, rows: torch.Tensor, grad: torch.Tensor, into: torch.Tensor
    ) -> None:
        for corner in range(rows.shape[1]):
            into.index_add_(0, rows[:, corner], grad * weights[:, corner : corner + 1])


TORCH_GATHER = TorchGather()


class RadianceField(nn.Module):
    """Feature stores for levels ``min_level..max_level`` plus one shared decoder MLP."""

    def __init__(
        self,
        octree: SparseOctree,
        config: FieldConfig,
        scale: float,
        offset: np.ndarray,
        stores: list[FeatureStore] | None = None,
    ) -> None:
        super().__init__()
        if octree.max_level != config.max_level:
            raise ValueError(f"octree depth {octree.max_level} != max_level {config.max_level}")
        self.octree = octree
        self.config = config
        self.scale = float(scale)
        self.offset = np.asarray(offset, dtype=np.float64)
        levels = range(config.min_level, config.max_level + 1)
        self.accel = OctreeAccel(octree, config.min_level, config.max_level)
        self.stores = nn.ModuleList(stores or [self._new_store(level) for level in levels])
        self.hidden = nn.Linear(config.feature_dim + VIEW_ENCODING_DIM, config.hidden_dim)
        self.output = nn.Linear(config.hidden_dim, 4)

    def _new_store(self, level: int) -> FeatureStore:
        num_corners, dim = self.octree.num_corners(level), self.config.feature_dim
        if self.config.store == "dense":
            return DenseFeatures(num_corners, dim)
        if self.config.store == "codebook":
            return CodebookFeatures(num_corners, dim, self.config.bitwidth)
        return HashedFeatures(self.octree.corners(level), dim, self.config.bitwidth)

    def levels(self) -> list[tuple[LevelIndex, FeatureStore]]:
        """(lookup, feature store) of each feature level, coarsest first."""
        return [
            (cast(LevelIndex, index), cast(FeatureStore, store))
            for index, store in zip(self.accel.levels, self.stores, strict=True)
        ]

    def features(
        self,
        points: torch.Tensor,
        lod: int,
        gather: FeatureGather = TORCH_GATHER,
        tables: Sequence[torch.Tensor | None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed features [N, k] of levels ``0..lod`` (indices into the feature levels), and
        whether each point lies in an allocated cell of the coarsest level (elsewhere the field
        is empty space: density 0, as the numpy decoder has it); differentiable in the
        stores. ``gather`` and ``tables`` as in :meth:`forward`."""
        levels, level_tables, inside = self._lookups(points, lod, gather, tables)
        return summed_features(levels, level_tables, gather, slice(None)), inside

    def _lookups(
        self,
        points: torch.Tensor,
        lod: int,
        gather: FeatureGather,
        tables: Sequence[torch.Tensor | None] | None,
    ) -> tuple[list[LevelLookup], list[torch.Tensor], torch.Tensor]:
        """Per level the corners and weights of every point and the table its rows index, and
        ``inside``.

        A level whose corners outnumber the batch's corner ids is asked only for the corners
        the batch touches (``store(rows)``), so the VQ-AD softmax runs on those rows alone;
        their numbers, which size ``rows``, are read for all such levels at once (one host
        sync per call, not one per level). A smaller level (every level of a 4096-ray batch
        up to level 6) is asked for all its corners: it saves the marking, which cost more
        than the softmax of the few corners not touched, and the gradients are the same
        (exactly 0 for those). Where ``tables`` (:meth:`corner_tables`,
        :meth:`training_tables`) has a level's table, that level's rows are its corner ids.
        Points in unallocated cells get zero weights, hence zero features."""
        if not 0 <= lod < self.config.num_lods:
            raise ValueError(f"lod must be in 0..{self.config.num_lods - 1}, got {lod}")
        lookups: list[LevelLookup] = []
        level_tables: list[torch.Tensor | None] = []  # None: the touched rows, read below
        inside: torch.Tensor | None = None  # set by level 0, which every lod includes
        touched: list[tuple[int, torch.Tensor]] = []
        for depth, (index, store) in enumerate(self.levels()[: lod + 1]):
            cell, corner_ids, weights = gather.corners(index, points)
            if inside is None:
                inside = cell >= 0
            table = None if tables is None else tables[depth]
            if table is not None:
                lookups.append(LevelLookup(weights, corner_ids))
                level_tables.append(table)
            elif corner_ids.numel() >= index.num_corners:
                lookups.append(LevelLookup(weights, corner_ids))
                level_tables.append(store(torch.arange(index.num_corners, device=cell.device)))
            else:
                mask, local_ids = mark_touched(corner_ids, index.num_corners)
                lookups.append(LevelLookup(weights, local_ids))
                level_tables.append(None)
                touched.append((depth, mask))
        if touched:
            counts = torch.stack([mask.sum() for _, mask in touched]).tolist()
            for (depth, mask), count in zip(touched, counts, strict=True):
                store = self.levels()[depth][1]
                level_tables[depth] = store(touched_rows(mask, count))
        assert inside is not None
        return lookups, [table for table in level_tables if table is not None], inside

    def corner_tables(self, lod: int) -> list[torch.Tensor]:
        """Decoded features [M, k] of every corner of levels ``0..lod`` (for VQ-AD, one argmax
        per corner), to decode once per render instead of once per batch of samples."""
        return [
            store(torch.arange(index.num_corners, device=index.cell_corners.device))
            .float()
            .contiguous()
            for index, store in self.levels()[: lod + 1]
        ]

    def training_tables(self, lod: int, corner_ids_bound: int) -> list[torch.Tensor | None]:
        """The stores' tables of levels ``0..lod`` for a render that shades its samples in
        several calls (the rounds of early ray termination), differentiable: each level with
        at most ``corner_ids_bound`` corners (the corner ids its samples can have) is asked
        for all its corners once, instead of once per call, and its gradient flows back
        through the store once; a larger level is None (its touched rows, per call)."""
        return [
            store(torch.arange(index.num_corners, device=index.cell_corners.device))
            if index.num_corners <= corner_ids_bound
            else None
            for index, store in self.levels()[: lod + 1]
        ]

    def forward(
        self,
        points: torch.Tensor,
        directions: torch.Tensor,
        lod: int,
        gather: FeatureGather = TORCH_GATHER,
        tables: Sequence[torch.Tensor | None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Density [N] (ReLU) and RGB [N, 3] (sigmoid) at normalised points, unit directions.
        ``gather`` does the lookups (a backend's kernels or torch's); ``tables``
        (:meth:`corner_tables`, for renders that shade many batches with one decoding) stand
        in for the stores.

        Cells, corners and the touched rows of each level's store are found for all points
        at once (the VQ-AD softmax runs once per touched row); interpolation and the decoder
        MLP then run in chunks of ``DECODE_CHUNK_ROWS`` points in one autograd function
        (:class:`~.shading.ShadeSamples`), whose backward skips the samples of density 0."""
        return self.forward_lods(points, directions, [lod], gather, tables)[0]

    def forward_lods(
        self,
        points: torch.Tensor,
        directions: torch.Tensor,
        lods: list[int],
        gather: FeatureGather = TORCH_GATHER,
        tables: Sequence[torch.Tensor | None] | None = None,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """:meth:`forward` at several levels of detail of the same points (the occupancy
        probes): cells, corners and store rows of each level are found once for all."""
        levels, level_tables, inside = self._lookups(points, max(lods), gather, tables)
        encoded = encode_view_directions(directions)
        return [
            ShadeSamples.apply(
                ShadingInputs(levels[: lod + 1], encoded, inside, gather, DECODE_CHUNK_ROWS),
                *self._mlp_parameters(),
                *level_tables[: lod + 1],
            )
            for lod in lods
        ]

    @torch.no_grad()
    def check_occupancy(self, generator: torch.Generator) -> None:
        """Probe the occupancy grids of every level (:mod:`.render.occupancy`). The longest
        step a sample stands for is a trace cell's diagonal over ``SAMPLES_PER_VOXEL``, in
        world units (``t`` is a world distance)."""
        cell_size = 2.0 / (1 << self.config.min_level) / self.scale
        longest_step = math.sqrt(3.0) * cell_size / SAMPLES_PER_VOXEL
        self.accel.occupancy.check(
            lambda points, directions, lods: [
                density for density, _ in self.forward_lods(points, directions, lods)
            ],
            longest_step,
            generator,
        )

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(feature grid parameters, decoder parameters): the grid trains at 100x the lr."""
        return list(self.stores.parameters()), [
            *self.hidden.parameters(),
            *self.output.parameters(),
        ]

    def _mlp_parameters(self) -> tuple[torch.Tensor, ...]:
        """In the order of :class:`MLPWeights`."""
        return self.hidden.weight, self.hidden.bias, self.output.weight, self.output.bias

    def to_field_data(self) -> FieldData:
        """The field as arrays; bitwidth and rank are read off the stores, so a frozen field
        rebuilt from an asset exports the same metadata it was read with."""
        mlp = MLPWeights(*(p.detach().float().cpu().numpy().copy() for p in self._mlp_parameters()))
        levels = [store.export(index.level) for index, store in self.levels()]
        codebook, basis = levels[0].codebook, levels[0].basis
        return FieldData(
            octree=self.octree,
            min_level=self.config.min_level,
            feature_dim=self.config.feature_dim,
            scale=self.scale,
            offset=self.offset.copy(),
            mlp=mlp,
            levels=levels,
            bitwidth=0 if codebook is None else int(codebook.shape[0]).bit_length() - 1,
            rank=0 if basis is None else int(basis.shape[0]),
        )

    @classmethod
    def from_field_data(cls, data: FieldData) -> RadianceField:
        """A frozen field that renders exactly what an asset's bytes hold."""
        octree = data.octree  # reused as is when it fits: its corner tables are already built
        if octree.max_level != data.max_level:
            octree = octree.truncated(data.max_level)
        hidden_dim = int(data.mlp.hidden_bias.shape[0])
        config = FieldConfig(
            data.min_level, data.max_level, data.feature_dim, "dense", hidden_dim=hidden_dim
        )
        stores: list[FeatureStore] = [
            FrozenFeatures(level_data, octree.corners(level_data.level))
            for level_data in data.levels
        ]
        field = cls(octree, config, data.scale, data.offset, stores)
        with torch.no_grad():
            for parameter, array in zip(field._mlp_parameters(), data.mlp.arrays(), strict=True):
                parameter.copy_(torch.from_numpy(np.asarray(array, dtype=np.float32)))
        return field
