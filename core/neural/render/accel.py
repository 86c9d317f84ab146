"""The field's acceleration structure: everything a renderer asks of the octree, on the device.

One :class:`OctreeAccel` per field, built once with it and moved with it (``field.to``): the
trace tables (cell boxes and child pointers of levels ``0..min_level`` as one node array, which
the torch traversal and the CUDA kernel both walk, so both test exactly the same numbers), one
:class:`LevelIndex` per feature level (point -> cell, corners, trilinear weights), and the
occupancy grids of :mod:`.occupancy` that let training and rendering skip empty space.

The three questions it answers follow kaolin-wisp's ``BaseAS``: :meth:`OctreeAccel.query`
(which cell holds a point), :meth:`OctreeAccel.raytrace` (which cells a ray crosses, front to
back) and :meth:`OctreeAccel.raymarch` (samples in them, less those the occupancy grids
cull).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ...asset.cell_grid import lookup_cells
from ...asset.octree import SparseOctree
from ...limits import MAX_LEVEL, SAMPLES_PER_VOXEL
from .occupancy import Culling, OccupancyGrids, sample_occupied
from .raymarch import PackedSamples, VoxelHits

_MIN_DIRECTION = 1e-9


@dataclass(frozen=True)
class TraceTables:
    """Levels ``0..level`` of the octree as one node array: a child pointer is a node id."""

    level: int  # the traced level
    cell_min: torch.Tensor  # [nodes, 3] float64: box corners of levels 0..level, concatenated
    children: torch.Tensor  # [nodes above level, 8] node ids, -1 for empty children
    level_start: int  # node id of the first cell of the traced level
    num_roots: int  # 1, or 0 for an empty octree

    @classmethod
    def build(cls, octree: SparseOctree, level: int) -> TraceTables:
        if level > MAX_LEVEL:
            raise ValueError(f"the tracer supports levels up to {MAX_LEVEL}")
        sizes = [int(octree.cells[depth].shape[0]) for depth in range(level + 1)]
        starts = [sum(sizes[:depth]) for depth in range(level + 2)]
        boxes = [
            torch.from_numpy(octree.cells[depth]).double() * (2.0 / (1 << depth)) - 1.0
            for depth in range(level + 1)
        ]
        children = []
        for depth in range(level):
            table = torch.from_numpy(octree.children(depth))
            children.append(torch.where(table >= 0, table + starts[depth + 1], -1))
        child_ids = torch.cat(children) if children else torch.empty(0, 8, dtype=torch.int64)
        return cls(level, torch.cat(boxes), child_ids, starts[level], min(sizes[0], 1))

    def to(self, device: torch.device, child_dtype: torch.dtype = torch.int64) -> TraceTables:
        if child_dtype == torch.int32 and self.cell_min.shape[0] >= 2**31:
            raise ValueError("the CUDA tracer indexes nodes with int32; this octree is too large")
        return TraceTables(
            self.level,
            self.cell_min.to(device).contiguous(),
            self.children.to(device=device, dtype=child_dtype).contiguous(),
            self.level_start,
            self.num_roots,
        )


class LevelIndex(nn.Module):
    """Point -> (cell, trilinear weights, corner ids) for one octree level.

    Cells are found without search through the level's :class:`~core.asset.cell_grid.CellGrid`
    (the numpy field reads the same tables). ``sorted_keys`` and ``key_to_cell`` (linear keys
    ``(x * R + y) * R + z`` in sorted order, and the Morton cell of each) serve the CUDA
    lookup kernel, which searches them.
    """

    sorted_keys: torch.Tensor
    key_to_cell: torch.Tensor
    cell_corners: torch.Tensor
    grid_root: torch.Tensor

    def __init__(self, octree: SparseOctree, level: int) -> None:
        super().__init__()
        self.level = level
        self.resolution = 1 << level
        keys = self._linear_keys(torch.from_numpy(octree.cells[level]))
        order = torch.argsort(keys)
        self.register_buffer("sorted_keys", keys[order], persistent=False)
        self.register_buffer("key_to_cell", order, persistent=False)
        corners = torch.from_numpy(octree.cell_corners(level))
        self.register_buffer("cell_corners", corners, persistent=False)
        self.num_corners = octree.num_corners(level)
        grid = octree.cell_grid(level)
        self.register_buffer("grid_root", torch.from_numpy(grid.root), persistent=False)
        self._brick_names: list[str] = []  # buffers, so that .to() moves them
        for step, table in enumerate(grid.bricks):
            name = f"grid_bricks_{step}"
            self.register_buffer(name, torch.from_numpy(table), persistent=False)
            self._brick_names.append(name)

    def _linear_keys(self, cells: torch.Tensor) -> torch.Tensor:
        return (cells[:, 0] * self.resolution + cells[:, 1]) * self.resolution + cells[:, 2]

    def find(self, cell_coords: torch.Tensor) -> torch.Tensor:
        """Index of each integer cell [N, 3] (int64, inside the grid), -1 where unallocated."""
        bricks = tuple(self.get_buffer(name) for name in self._brick_names)
        return lookup_cells(self.grid_root, bricks, self.level, cell_coords).long() - 1

    def locate(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell index per point (-1 where unallocated) and trilinear weights [N, 8]."""
        scaled = (points + 1.0) * (0.5 * self.resolution)
        cells = torch.clamp(torch.floor(scaled), 0, self.resolution - 1)
        local = scaled - cells
        found = self.find(cells.long())
        inside = ((points >= -1.0) & (points <= 1.0)).all(dim=-1)
        cell = torch.where(inside, found, -1)
        return cell, trilinear_weights(local)


def trilinear_weights(local: torch.Tensor) -> torch.Tensor:
    """[N, 8] weights of a cell's corners for positions ``local`` [N, 3] in the cell, corner
    ``c`` at ``core.octree.CORNER_OFFSETS[c]`` (x is bit 2, z bit 0), as ``(wx * wy) * wz``: built
    as outer products of the per-axis pairs (1 - t, t): bit for bit what selecting from and
    reducing an [N, 8, 3] tensor gives, in half the time on the CPU."""
    x, y, z = torch.stack([1.0 - local, local], dim=-1).unbind(1)  # each [N, 2]
    xy = (x[:, :, None] * y[:, None, :]).reshape(-1, 4, 1)
    return (xy * z[:, None, :]).reshape(-1, 8)


class OctreeAccel(nn.Module):
    """Traversal down to ``trace_level`` (the coarsest feature level, where the paper places
    its 16 samples per cell) and lookups at the feature levels ``trace_level..max_level``."""

    node_min: torch.Tensor
    node_children: torch.Tensor

    def __init__(self, octree: SparseOctree, trace_level: int, max_level: int) -> None:
        super().__init__()
        self.octree = octree
        self.trace_level = trace_level
        tables = TraceTables.build(octree, trace_level)
        self._level_start, self._num_roots = tables.level_start, tables.num_roots
        self.register_buffer("node_min", tables.cell_min, persistent=False)
        self.register_buffer("node_children", tables.children, persistent=False)
        self.levels = nn.ModuleList(
            LevelIndex(octree, level) for level in range(trace_level, max_level + 1)
        )
        self._kernel_tables: dict[torch.device, TraceTables] = {}
        trace_cells = torch.from_numpy(octree.cells[trace_level])
        self.occupancy = OccupancyGrids(
            trace_cells, trace_level, range(trace_level, max_level + 1), self.level_index(0).find
        )

    def level_index(self, lod: int) -> LevelIndex:
        index: LevelIndex = self.levels[lod]  # type: ignore[assignment]
        return index

    def query(self, points: torch.Tensor, lod: int) -> torch.Tensor:
        """Cell of feature level ``lod`` holding each normalised point, -1 where none."""
        return self.level_index(lod).locate(points)[0]

    def trace_tables(self, device: torch.device) -> TraceTables:
        """The trace tables on ``device`` with int32 child ids, as the CUDA kernel reads them
        (built once per device, from the same float64 boxes the torch traversal reads)."""
        if device not in self._kernel_tables:
            own = TraceTables(
                self.trace_level,
                self.node_min,
                self.node_children,
                self._level_start,
                self._num_roots,
            )
            self._kernel_tables[device] = own.to(device, torch.int32)
        return self._kernel_tables[device]

    def raytrace(
        self, origins: torch.Tensor, directions: torch.Tensor, culling: Culling | None = None
    ) -> VoxelHits:
        """Cells of ``trace_level`` hit by rays (normalised origins [R, 3], directions [R, 3]),
        packed by ray and front to back, by level-synchronous descent: (ray, node) pairs that
        hit a node's box are expanded into the node's occupied children. With ``culling``,
        less the cells it culls (the torch twin of the CUDA tracer's culling)."""
        origins, directions = origins.double(), directions.double()
        safe = torch.where(directions.abs() < _MIN_DIRECTION, _MIN_DIRECTION, directions)
        inverse = 1.0 / safe
        ray = torch.arange(origins.shape[0] * self._num_roots, device=origins.device)
        node = torch.zeros_like(ray)
        t_in = t_out = origins.new_zeros(0)
        for depth in range(self.trace_level + 1):
            size = 2.0 / (1 << depth)
            t_in, t_out = _slab(origins[ray], inverse[ray], self.node_min[node], size)
            hit = t_out > torch.clamp(t_in, min=0.0)
            ray, node, t_in, t_out = ray[hit], node[hit], t_in[hit], t_out[hit]
            if depth == self.trace_level:
                break
            children = self.node_children[node]  # [K, 8]
            occupied = children >= 0
            ray = ray[:, None].expand(-1, 8)[occupied]
            node = children[occupied]
        t_in = torch.clamp(t_in, min=0.0)
        order = torch.argsort(t_in, stable=True)
        order = order[torch.argsort(ray[order], stable=True)]
        cell = node[order] - self._level_start
        hits = VoxelHits(ray[order], cell, t_in[order].float(), t_out[order].float())
        return hits if culling is None else culling.occupied_hits(hits)

    def raymarch(
        self,
        origins: torch.Tensor,
        directions: torch.Tensor,
        lod: int,
        generator: torch.Generator | None,
        trace: Callable[..., VoxelHits] | None = None,
        sample: Callable[..., PackedSamples] = sample_occupied,
    ) -> PackedSamples:
        """Stratified samples (``SAMPLES_PER_VOXEL`` per cell) in the cells the rays cross
        that level ``lod``'s occupancy keeps, less the samples in its culled sub-cells;
        ``trace`` and ``sample`` are a backend's primitives (torch's by default), which both
        take the level's :class:`~.occupancy.Culling` and apply it themselves."""
        culling = self.occupancy.culling(lod)
        hits = (
            self.raytrace(origins, directions, culling)
            if trace is None
            else trace(self, origins, directions, culling)
        )
        return sample(hits, origins, directions, generator, SAMPLES_PER_VOXEL, culling)

    def sample_occupied(
        self,
        hits: VoxelHits,
        origins: torch.Tensor,
        directions: torch.Tensor,
        lod: int,
        generator: torch.Generator | None,
        sample: Callable[..., PackedSamples] = sample_occupied,
    ) -> PackedSamples:
        """The samples of ``hits`` (cells the occupancy of level ``lod`` keeps) that lie in its
        occupied sub-cells: the sampling half of :meth:`raymarch`, for renders that take a
        ray's hits a few at a time."""
        return sample(
            hits, origins, directions, generator, SAMPLES_PER_VOXEL, self.occupancy.culling(lod)
        )


def _slab(
    origins: torch.Tensor, inverse: torch.Tensor, box_min: torch.Tensor, size: float
) -> tuple[torch.Tensor, torch.Tensor]:
    near = (box_min - origins) * inverse
    far = (box_min + size - origins) * inverse
    return torch.minimum(near, far).amax(dim=-1), torch.maximum(near, far).amin(dim=-1)
