"""Flat device tables the traversal kernel walks, built once per tracer and device.

``OctreeTracer`` keeps one buffer per depth (cell boxes, child tables). The kernel wants all
depths in one node array instead, so that a child pointer is a plain node id: this module
concatenates the tracer's own float64 boxes (so both backends test exactly the same numbers)
and rewrites each child table from per-level cell indices to node ids.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from ....limits import MAX_LEVEL
from ..raymarch import OctreeTracer


@dataclass(frozen=True)
class TraceTables:
    cell_min: torch.Tensor  # [nodes, 3] float64: box corners of levels 0..level, concatenated
    children: torch.Tensor  # [nodes above level, 8] int32 node ids, -1 for empty children
    level_start: int  # node id of the first cell of the traced level
    num_roots: int  # 1, or 0 for an empty octree


_CACHE: weakref.WeakKeyDictionary[OctreeTracer, dict[torch.device, TraceTables]] = (
    weakref.WeakKeyDictionary()
)


def trace_tables(tracer: OctreeTracer, device: torch.device) -> TraceTables:
    """The tables of ``tracer`` on ``device`` (cached for the tracer's lifetime)."""
    per_device = _CACHE.setdefault(tracer, {})
    if device not in per_device:
        per_device[device] = _build(tracer, device)
    return per_device[device]


def _build(tracer: OctreeTracer, device: torch.device) -> TraceTables:
    if tracer.level > MAX_LEVEL:
        raise ValueError(f"the CUDA tracer supports levels up to {MAX_LEVEL}")
    boxes = [tracer.get_buffer(f"cell_min_{depth}") for depth in range(tracer.level + 1)]
    sizes = [int(box.shape[0]) for box in boxes]
    starts = [sum(sizes[:depth]) for depth in range(tracer.level + 2)]
    children = []
    for depth in range(tracer.level):
        table = tracer.get_buffer(f"children_{depth}")
        children.append(torch.where(table >= 0, table + starts[depth + 1], -1))
    if starts[-1] >= 2**31:
        raise ValueError("the CUDA tracer indexes nodes with int32; this octree is too large")
    cell_min = torch.cat(boxes).to(device=device, dtype=torch.float64).contiguous()
    child_ids = (torch.cat(children) if children else torch.empty(0, 8, dtype=torch.int64)).to(
        device=device, dtype=torch.int32
    )
    return TraceTables(cell_min, child_ids.contiguous(), starts[tracer.level], min(sizes[0], 1))
