"""Rebuild every shipped model in exported_models/: `python -m live.models.build` (or `make models`).

Each builder is deterministic, so a rebuild reproduces the committed files byte for byte.
"""

from __future__ import annotations

import sys
from pathlib import Path

from live.models import build_fp16, build_pretrained, build_styles, build_synth

EXPORTED = Path(__file__).resolve().parents[2] / "exported_models"


def build_all(out_dir: Path = EXPORTED) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return [build_styles.build(out_dir), build_synth.build(out_dir), *build_pretrained.build(out_dir),
            *build_fp16.build(out_dir)]  # after the float models it converts


if __name__ == "__main__":
    for path in build_all(Path(sys.argv[1]) if len(sys.argv) > 1 else EXPORTED):
        print(f"built {path}")
