"""What an asset is, in numpy alone: the octree, the field's arrays, the numpy field that
evaluates them, and the ``.vbnf`` format. Blender's Python imports this package (it has numpy,
not torch), so nothing under it may import torch."""
