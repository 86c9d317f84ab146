"""Load a dataset folder with nerfstudio's own parsers and write what they make of it as JSON.

Runs in ``.venv-nerfstudio`` (``make test-nerfstudio`` builds it), never in the project's venv:
``tests/test_nerfstudio.py`` starts it as a subprocess and compares the answer with
``core.data.dataset``. For each parser and split it reports the image files, the intrinsics, the
poses and, for ``nerfstudio-data``, the depth images as nerfstudio's depth dataset returns them
(``depth-nerfacto`` trains on these), divided back by the parser's pose scale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.data.datasets.depth_dataset import DepthDataset

SPLITS = ("train", "val", "test")


def _cameras(outputs: Any) -> dict[str, Any]:
    cameras = outputs.cameras
    return {
        "images": [str(path) for path in outputs.image_filenames],
        "fx": cameras.fx[:, 0].tolist(),
        "fy": cameras.fy[:, 0].tolist(),
        "cx": cameras.cx[:, 0].tolist(),
        "cy": cameras.cy[:, 0].tolist(),
        "width": cameras.width[:, 0].tolist(),
        "height": cameras.height[:, 0].tolist(),
        "camera_to_world": cameras.camera_to_worlds.tolist(),
        "scale": float(outputs.dataparser_scale),
    }


def probe(data: Path) -> dict[str, Any]:
    blender = BlenderDataParserConfig(data=data).setup()
    nerfstudio = NerfstudioDataParserConfig(data=data).setup()
    report: dict[str, Any] = {"blender-data": {}, "nerfstudio-data": {}}
    for split in SPLITS:
        report["blender-data"][split] = _cameras(blender.get_dataparser_outputs(split))
        outputs = nerfstudio.get_dataparser_outputs(split)
        entry = _cameras(outputs)
        dataset = DepthDataset(outputs)
        entry["depth"] = [
            (dataset[index]["depth_image"][..., 0] / outputs.dataparser_scale).tolist()
            for index in range(len(dataset))
        ]
        report["nerfstudio-data"][split] = entry
    return report


if __name__ == "__main__":  # probe DATA REPORT.json (nerfstudio logs to stdout)
    Path(sys.argv[2]).write_text(json.dumps(probe(Path(sys.argv[1]))))
