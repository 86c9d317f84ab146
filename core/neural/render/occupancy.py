"""Empty-space skipping that keeps every level honest: one occupancy grid per level of detail.

After two epochs most samples of a bake have weight below 1e-4 and many have density exactly 0
(a third belong to background rays), yet each costs a full MLP forward and backward. The grids
here let a render drop them before any shading, while the paper's sampling stays as it is for
what is kept (16 stratified samples per coarsest-level cell a ray crosses, jittered).

Layout: every cell of the trace level (the coarsest feature level) is split into ``S^3``
sub-cells at a finer *occupancy level*; sub-cell ``j`` of trace cell ``c`` is entry
``c * S^3 + j``, so a sample finds its entry from its hit's cell and its position alone. Each
level of detail has its own grid and occupancy level (a coarse level's density is blurrier than
the finest level's), as fine as ``PROBE_CELLS_PER_LOD`` probes per check allow.

The rule, chosen so that culling never starves a cell whose density is still being learned:

- no check before ``warmup_steps`` (early densities are diffuse and change fast);
- then every ``interval_steps`` each sub-cell is probed afresh: its density at one uniformly
  jittered point, for one random view direction (density depends on it through the MLP). A
  probe is empty when ``density * longest_step`` stays below ``OCCUPANCY_OPACITY``, the
  opacity the densest sample of that cell could then have;
- a sub-cell is culled only after ``EMPTY_CHECKS`` consecutive empty probes, at different
  points and directions, and only while every neighbour sub-cell is too (one cell of
  dilation: the safety margin for surfaces that move or grow between checks);
- there is no memory beyond that: a culled cell is probed again at every check and returns the
  moment a probe sees density (the EMA grids of instant-ngp remember diffuse early densities,
  which is what made them skip almost nothing in a short bake).

A trace cell with no occupied sub-cell is dropped right after tracing, so background rays that
miss every occupied cell cost a traversal and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ...limits import SAMPLES_PER_VOXEL
from .raymarch import PackedSamples, VoxelHits, sample_hits

OCCUPANCY_OPACITY = 1e-4  # a probe below this opacity (over the longest step) is empty
EMPTY_CHECKS = 3  # consecutive empty probes before a sub-cell is culled
PROBE_CELLS_PER_LOD = 1 << 17  # bounds the sub-cells (and probes per check) of one level
PROBE_CHUNK = 1 << 15

# densities(points, directions, lods) -> one density [N] per level of detail in lods
DensityFn = Callable[[torch.Tensor, torch.Tensor, list[int]], list[torch.Tensor]]


@dataclass(frozen=True)
class OccupancySchedule:
    """When the grids are checked: first at ``warmup_steps``, then every ``interval_steps``.
    Culling starts with the ``EMPTY_CHECKS``-th check."""

    warmup_steps: int = 64
    interval_steps: int = 16

    def __post_init__(self) -> None:
        if self.warmup_steps < 0 or self.interval_steps < 1:
            raise ValueError(
                f"occupancy warm-up must be >= 0 and interval >= 1 steps, got "
                f"{self.warmup_steps} and {self.interval_steps}"
            )

    def due(self, step: int) -> bool:
        return step >= self.warmup_steps and (step - self.warmup_steps) % self.interval_steps == 0


def occupancy_level(trace_level: int, level: int, num_trace_cells: int, max_level: int) -> int:
    """The occupancy level of feature level ``level``: one finer than the level itself (its
    density varies inside its own cells), no finer than the field, and within the probe
    budget."""
    wanted = min(level + 1, max_level)
    budget = max(PROBE_CELLS_PER_LOD // max(num_trace_cells, 1), 1)
    affordable = trace_level + (budget.bit_length() - 1) // 3  # floor(log8(budget))
    return max(trace_level, min(wanted, affordable))


class LevelOccupancy(nn.Module):
    """The grid of one level of detail: probe history and what it implies."""

    empty_count: torch.Tensor  # [C] uint8: consecutive empty probes of each sub-cell
    occupied: torch.Tensor  # [C] bool: the sub-cells a render keeps
    cell_occupied: torch.Tensor  # [trace cells] bool: any occupied sub-cell

    def __init__(self, num_trace_cells: int, trace_level: int, level: int) -> None:
        super().__init__()
        self.level = level
        self.sub_bits = level - trace_level
        self.sub_cells = 1 << (3 * self.sub_bits)
        size = num_trace_cells * self.sub_cells
        self.register_buffer("empty_count", torch.zeros(size, dtype=torch.uint8), False)
        self.register_buffer("occupied", torch.ones(size, dtype=torch.bool), False)
        self.register_buffer("cell_occupied", torch.ones(num_trace_cells, dtype=torch.bool), False)


@dataclass(frozen=True)
class Culling:
    """What one level of detail culls, as both backends read it: the torch path indexes these
    tensors, the CUDA kernels (``cuda/octree_trace.cu``, ``cuda/sampling.cu``) take them as
    byte arrays and decide the same way, sample by sample."""

    cell_occupied: torch.Tensor  # [trace cells] bool: the cell has an occupied sub-cell
    occupied: torch.Tensor  # [trace cells * 8^sub_bits] bool, entries as in the module doc
    trace_cells: torch.Tensor  # [trace cells, 3] int64 coordinates at the trace level
    level: int  # the occupancy level
    sub_bits: int  # occupancy level - trace level

    def occupied_hits(self, hits: VoxelHits) -> VoxelHits:
        """The hits whose cell has an occupied sub-cell, in their order."""
        keep = torch.nonzero(self.cell_occupied[hits.cell_index]).squeeze(1)
        return VoxelHits(
            *(a[keep] for a in (hits.ray_index, hits.cell_index, hits.t_in, hits.t_out))
        )

    def occupied_samples(
        self, hits: VoxelHits, samples: PackedSamples, samples_per_voxel: int = SAMPLES_PER_VOXEL
    ) -> torch.Tensor:
        """Indices of the samples (``samples_per_voxel`` per hit, in hit order) that lie in
        occupied sub-cells."""
        hit = torch.arange(samples.t.numel(), device=samples.t.device) // samples_per_voxel
        entry = self._entries(hits.cell_index[hit], samples.points)
        return torch.nonzero(self.occupied[entry]).squeeze(1)

    def _entries(self, cell: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Grid entry of points known to lie in (or on the boundary of) trace ``cell``."""
        scaled = torch.floor((points + 1.0) * (0.5 * (1 << self.level))).long()
        base = self.trace_cells[cell] << self.sub_bits
        local = torch.clamp(scaled - base, 0, (1 << self.sub_bits) - 1)
        return cell * (1 << (3 * self.sub_bits)) + _linear(local, self.sub_bits)


def sample_occupied(
    hits: VoxelHits,
    origins: torch.Tensor,
    directions: torch.Tensor,
    generator: torch.Generator | None,
    samples_per_voxel: int = SAMPLES_PER_VOXEL,
    culling: Culling | None = None,
) -> PackedSamples:
    """``sample_hits``, less the samples ``culling`` culls: the torch backend's ``sample``."""
    samples = sample_hits(hits, origins, directions, generator, samples_per_voxel)
    if culling is None:
        return samples
    return samples.select(culling.occupied_samples(hits, samples, samples_per_voxel))


class OccupancyGrids(nn.Module):
    """The grids of all levels of detail of one field, owned by its
    :class:`~.accel.OctreeAccel`; inactive (keeping everything) until ``EMPTY_CHECKS`` checks
    have run."""

    trace_cells: torch.Tensor  # [N, 3] int64 coordinates of the trace level's cells

    def __init__(
        self,
        trace_cells: torch.Tensor,
        trace_level: int,
        feature_levels: range,
        find_trace_cell: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        super().__init__()
        self.trace_level = trace_level
        self.checks = 0
        self._find_trace_cell = find_trace_cell
        self.register_buffer("trace_cells", trace_cells, persistent=False)
        count, top = int(trace_cells.shape[0]), feature_levels[-1]
        self.levels = nn.ModuleList(
            LevelOccupancy(count, trace_level, occupancy_level(trace_level, level, count, top))
            for level in feature_levels
        )

    @property
    def active(self) -> bool:
        return self.checks >= EMPTY_CHECKS

    def grid(self, lod: int) -> LevelOccupancy:
        grid: LevelOccupancy = self.levels[lod]  # type: ignore[assignment]
        return grid

    # --- what a render asks ---------------------------------------------------------------

    def culling(self, lod: int) -> Culling | None:
        """What level ``lod`` culls, or None while inactive (keep everything)."""
        if not self.active:
            return None
        grid = self.grid(lod)
        return Culling(
            grid.cell_occupied, grid.occupied, self.trace_cells, grid.level, grid.sub_bits
        )

    def occupied_hits(self, hits: VoxelHits, lod: int) -> VoxelHits:
        """The hits whose cell has an occupied sub-cell (all of them while inactive)."""
        culling = self.culling(lod)
        return hits if culling is None else culling.occupied_hits(hits)

    def occupied_samples(
        self, hits: VoxelHits, samples: PackedSamples, lod: int
    ) -> torch.Tensor | None:
        """Indices of the samples (``SAMPLES_PER_VOXEL`` per hit, in hit order) that lie in
        occupied sub-cells, or None while inactive (keep all)."""
        culling = self.culling(lod)
        return None if culling is None else culling.occupied_samples(hits, samples)

    # --- how the grids learn ----------------------------------------------------------------

    @torch.no_grad()
    def check(self, density: DensityFn, longest_step: float, generator: torch.Generator) -> None:
        """Probe every sub-cell of every level once (``density(points, directions, lods)``
        evaluates the field) and update what is culled. Levels of detail whose grids share an
        occupancy level share their probes (points and directions), so the field finds the
        probes' cells and corners once for all of them."""
        for level in sorted({grid.level for grid in self._grids()}):
            lods = [lod for lod, grid in enumerate(self._grids()) if grid.level == level]
            grid = self.grid(lods[0])
            device = grid.occupied.device
            entries = torch.arange(grid.occupied.numel(), device=device)
            coords = self._coords(grid, entries)
            jitter = torch.rand(entries.numel(), 3, generator=generator).to(device)
            points = (coords + jitter) * (2.0 / (1 << grid.level)) - 1.0
            directions = torch.nn.functional.normalize(
                torch.randn(entries.numel(), 3, generator=generator).to(device), dim=1
            )
            chunks = [
                density(points[a : a + PROBE_CHUNK], directions[a : a + PROBE_CHUNK], lods)
                for a in range(0, entries.numel(), PROBE_CHUNK)
            ]
            for position, lod in enumerate(lods):
                probed = torch.cat([chunk[position] for chunk in chunks])
                empty = probed * longest_step < OCCUPANCY_OPACITY
                lod_grid = self.grid(lod)
                lod_grid.empty_count.copy_(
                    torch.where(empty, (lod_grid.empty_count + 1).clamp(max=EMPTY_CHECKS), 0)
                )
                self._update_occupied(lod_grid, coords)
        self.checks += 1

    def _grids(self) -> list[LevelOccupancy]:
        return [self.grid(lod) for lod in range(len(self.levels))]

    def _coords(self, grid: LevelOccupancy, entries: torch.Tensor) -> torch.Tensor:
        """Integer coordinates [C, 3] at the grid's level of grid entries."""
        cell, local = entries // grid.sub_cells, entries % grid.sub_cells
        bits = grid.sub_bits
        offset = torch.stack(
            [local >> (2 * bits), (local >> bits) & ((1 << bits) - 1), local & ((1 << bits) - 1)],
            dim=1,
        )
        return (self.trace_cells[cell] << bits) + offset

    def _update_occupied(self, grid: LevelOccupancy, coords: torch.Tensor) -> None:
        """Occupied: not yet empty ``EMPTY_CHECKS`` times, or next to such a sub-cell."""
        seen = grid.empty_count < EMPTY_CHECKS
        occupied = seen.clone()
        centres = coords[seen]
        resolution = 1 << grid.level
        for offset in _NEIGHBOUR_OFFSETS.to(coords.device):
            neighbour = centres + offset
            inside = ((neighbour >= 0) & (neighbour < resolution)).all(dim=1)
            neighbour = neighbour[inside]
            cell = self._find_trace_cell(neighbour >> grid.sub_bits)
            allocated = cell >= 0
            neighbour, cell = neighbour[allocated], cell[allocated]
            local = neighbour & ((1 << grid.sub_bits) - 1)
            occupied[cell * grid.sub_cells + _linear(local, grid.sub_bits)] = True
        grid.occupied.copy_(occupied)
        grid.cell_occupied.copy_(occupied.view(-1, grid.sub_cells).any(dim=1))

    # --- checkpoints ------------------------------------------------------------------------

    def state(self) -> dict[str, object]:
        return {
            "checks": self.checks,
            "empty_count": [self.grid(lod).empty_count.cpu() for lod in range(len(self.levels))],
        }

    def load_state(self, state: dict[str, object]) -> None:
        """Restore :meth:`state`; a ValueError when it belongs to another field layout."""
        counts = state["empty_count"]
        if not isinstance(counts, list) or len(counts) != len(self.levels):
            raise ValueError("occupancy state has another number of levels")
        for lod, count in enumerate(counts):
            grid = self.grid(lod)
            if tuple(count.shape) != tuple(grid.empty_count.shape):
                raise ValueError(f"occupancy grid {lod} has another size")
            grid.empty_count.copy_(count.to(grid.empty_count))
            entries = torch.arange(count.numel(), device=grid.occupied.device)
            self._update_occupied(grid, self._coords(grid, entries))
        self.checks = int(state["checks"])  # type: ignore[call-overload]


_NEIGHBOUR_OFFSETS = torch.tensor(
    [
        [x, y, z]
        for x in (-1, 0, 1)
        for y in (-1, 0, 1)
        for z in (-1, 0, 1)
        if (x, y, z) != (0, 0, 0)
    ]
)


def _linear(local: torch.Tensor, bits: int) -> torch.Tensor:
    return (((local[:, 0] << bits) | local[:, 1]) << bits) | local[:, 2]
