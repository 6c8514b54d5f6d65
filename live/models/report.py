"""`live models report`: every style of every image-to-image model on real photographs, judged in a pretrained
feature space, old and new models side by side.

Material: the photographs in live/assets/ (a person, a cat, a coffee cup, a rocket launch; licences in
live/assets/README.md), centre-cropped to the report's aspect and resized, and a moving clip made from the first
of them by live.models.temporal (known camera motion, sensor noise, a moving subject). Every model runs through the
player's own Stylizer with the player's controls, so the report sees what a show plays.

Per style (means over the photos; features, Gram matrices and distances in live/models/features.py):

- style_distance: Gram distance of the output to the style's reference image. No shipped style comes with a
  painting, so the reference is the style's rendering of build_pretrained's test card by the model that defines
  the style (REFERENCE_MODELS): painterly-26 for its 26 styles (painterly-arbitrary's bank holds the predictor's
  vectors of exactly those renderings, so for that model it is the style's own image), styles-procedural for
  its 8 (the teacher styles-cpu and styles-gpu were trained to imitate). A style no reference model has: none.
- recognised: the share of photos on which the output's nearest reference (Gram distance) among the reported
  styles' (all, unless --style chose some) is its own style's.
- content_distance: feature distance of the output to its input photo at the content layer.
- warp_error: temporal.warp_error of the styled clip, each frame stylized alone (the input clip's own value is the
  floor); warp_error_stable: the same with the flicker remover at its default /video/stability (none where this
  Stylizer has no such control).
- teacher_tier / teacher_naive: feature distance (all layers) to the same model at full resolution (the teacher)
  of (a) the CPU tier, the Stylizer at `scale` (run small, upsampled edge-aware), and (b) the naive baseline: the
  teacher run at the tier's internal size and upscaled bilinearly. Lower is closer to the teacher. (a) is none
  where this Stylizer has no `scale`.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from live.errors import LiveError
from live.models import temporal
from live.models.build_pretrained import test_card
from live.models.features import FeatureSpace, Features, content_distance, feature_distance, style_distance
from live.models.manifest import atomic_write, load_manifest, manifest_paths
from live.video.upsample import downscale

if TYPE_CHECKING:
    from live.video.stylize import Stylizer

ASSETS = Path(__file__).resolve().parents[1] / "assets"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")  # live/assets/<name>.jpg; the first makes the moving clip
REFERENCE_MODELS = ("painterly-26", "styles-procedural")  # who defines each style name (see the module doc)
TIER_SCALE = 0.25  # the CPU tier's internal scale that the report measures
SHEET_BYTES = 1_000_000  # each sheet stays under this
THREADS = 2


def photos(width: int, height: int, names: tuple[str, ...] = PHOTOS) -> list[np.ndarray]:
    """The report's photographs, fitted to width x height."""
    out = []
    for name in names:
        path = ASSETS / f"{name}.jpg"
        image = cv2.imread(str(path))
        if image is None:
            raise LiveError(f"report photo {path} is missing or unreadable", "restore it from git (live/assets/)")
        out.append(fit(image, width, height))
    return out


def fit(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """The image's largest centred width:height crop, resized to width x height (area interpolation)."""
    h, w = image.shape[:2]
    crop_w, crop_h = min(w, h * width // height), min(h, w * height // width)
    x, y = (w - crop_w) // 2, (h - crop_h) // 2
    return cv2.resize(image[y:y + crop_h, x:x + crop_w], (width, height), interpolation=cv2.INTER_AREA)


def style_values(style: str) -> dict[str, object]:
    return {"/video/style_a": style, "/video/style_b": style, "/video/blend": 0.0, "/video/strength": 1.0}


def open_stylizer(path: Path, **kwargs: object) -> Stylizer:
    from live.video.stylize import Stylizer

    stylizer = Stylizer(path, ("cpu",), threads=THREADS, **kwargs)
    stylizer.open()
    return stylizer


def _styles(path: Path) -> tuple[str, ...]:
    """A model's styles as the player lists them (read from the manifest; nothing is loaded)."""
    from live.video.stylize import Stylizer

    return tuple(Stylizer(path, ("cpu",)).styles)


def has_tier() -> bool:
    """Whether the player's Stylizer offers the CPU tier (a `scale` below 1)."""
    from live.video.stylize import Stylizer

    return "scale" in inspect.signature(Stylizer).parameters


def references(models_dir: Path, styles: list[str] | None = None) -> dict[str, np.ndarray]:
    """Each style name's reference image (all, or those in `styles`): the test card in that style, by the first
    REFERENCE_MODELS model with it."""
    refs: dict[str, np.ndarray] = {}
    card = test_card()
    for name in REFERENCE_MODELS:
        path = models_dir / f"{name}.json"
        if not path.is_file():
            continue
        stylizer = open_stylizer(path)
        refs.update({s: stylizer.process(card, style_values(s)) for s in stylizer.styles
                     if s not in refs and (styles is None or s in styles)})
        stylizer.close()
    return refs


def naive(stylizer: Stylizer, image: np.ndarray, values: dict, scale: float) -> np.ndarray:
    """The baseline a tier must beat: the model at the tier's internal size (`scale` of each side, area-averaged,
    each side a multiple of 4 as the tier makes it), upscaled bilinearly."""
    height, width = image.shape[:2]
    return cv2.resize(stylizer.process(downscale(image, scale), values), (width, height),
                      interpolation=cv2.INTER_LINEAR)


def _clip_error(stylizer: Stylizer, clip: temporal.Clip, values: dict) -> float:
    return temporal.warp_error([stylizer.process(frame, values) for frame in clip.frames], clip)


def _style_models(models_dir: Path, names: list[str] | None) -> list[Path]:
    paths = {p.stem: p for p in manifest_paths(models_dir)}
    unknown = [n for n in names or [] if n not in paths]
    if unknown:
        raise LiveError(f"no model {', '.join(unknown)} in {models_dir}", "`live models` lists the models")
    chosen = [paths[n] for n in names] if names else list(paths.values())
    found = []
    for path in chosen:
        manifest = load_manifest(path)
        # a precision variant (provenance "from" its float model, e.g. -fp16) paints the same: reported when named
        if manifest.kind == "image-to-image" and (names or "from" not in manifest.provenance):
            found.append(path)
    if not found:
        raise LiveError(f"no image-to-image model with styles in {models_dir}", "build or import a style model")
    return found


def evaluate(model: Path, shots: list[np.ndarray], clip: temporal.Clip, space: FeatureSpace,
             refs: dict[str, Features], styles: list[str] | None = None, tier_scale: float = TIER_SCALE,
             ) -> tuple[dict[str, dict[str, float | None]], list[tuple[str, list[np.ndarray]]]]:
    """Metrics per style of one model (see the module doc), and its stylized photos for the sheet."""
    teacher = open_stylizer(model)
    tier = open_stylizer(model, scale=tier_scale) if has_tier() else None
    chosen = [s for s in teacher.styles if styles is None or s in styles]
    stability = next((p for p in teacher.params()[0] if p.address == "/video/stability"), None)
    inputs = [space(img) for img in shots]
    metrics: dict[str, dict[str, float | None]] = {}
    rows = []
    for style in chosen:
        values = style_values(style)
        outs = [teacher.process(img, values) for img in shots]
        feats = [space(out) for out in outs]
        own = refs.get(style)
        nearest = [min(refs, key=lambda name: style_distance(f, refs[name])) for f in feats] if own is not None else []
        metrics[style] = {
            "style_distance": float(np.mean([style_distance(f, own) for f in feats])) if own is not None else None,
            "recognised": float(np.mean([n == style for n in nearest])) if own is not None else None,
            "content_distance": float(np.mean([content_distance(f, i) for f, i in zip(feats, inputs)])),
            "warp_error": _clip_error(teacher, clip, values),  # values without /video/stability: each frame alone
            "warp_error_stable": _clip_error(teacher, clip, {**values, "/video/stability": stability.default})
            if stability else None,
            "teacher_tier": float(np.mean([feature_distance(f, space(tier.process(img, values)))
                                           for f, img in zip(feats, shots)])) if tier else None,
            "teacher_naive": float(np.mean([feature_distance(f, space(naive(teacher, img, values, tier_scale)))
                                            for f, img in zip(feats, shots)])),
        }
        rows.append((style, outs))
    teacher.close()
    if tier:
        tier.close()
    return metrics, rows


# --- the sheet and the tables -------------------------------------------------------------------------------------

def _label(tile: np.ndarray, text: str) -> None:
    scale = max(0.4, tile.shape[0] / 400)
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(tile, (0, 0), (w + 8, h + base + 8), (0, 0, 0), -1)
    cv2.putText(tile, text, (4, h + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def _tile(image: np.ndarray | None, width: int, height: int) -> np.ndarray:
    """An image centre-cropped and resized to the tile, or a dark grey tile for none."""
    if image is None:
        return np.full((height, width, 3), 40, np.uint8)
    return fit(image, width, height)


def sheet(rows: list[tuple[str, np.ndarray | None, list[np.ndarray]]], tile_width: int) -> bytes:
    """A JPEG contact sheet, under SHEET_BYTES: one row per label, its reference image first, then the photos."""
    first = rows[0][2][0]
    tile_height = first.shape[0] * tile_width // first.shape[1]
    lines = []
    for label, reference, images in rows:
        tiles = [_tile(reference, tile_width, tile_height), *(_tile(i, tile_width, tile_height) for i in images)]
        _label(tiles[0], label)
        lines.append(np.hstack(tiles))
    image = np.vstack(lines)
    for quality in range(90, 10, -10):
        data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()
        if len(data) < SHEET_BYTES:
            return data
    raise LiveError(f"the report sheet stays over {SHEET_BYTES} bytes", "use a smaller --width")


def _number(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _mean(styles: dict[str, dict], key: str) -> float | None:
    values = [m[key] for m in styles.values() if m[key] is not None]
    return float(np.mean(values)) if values else None


COLUMNS = (("style_distance", "style dist. (Gram, to ref.)", 3), ("recognised", "recognised", 2),
           ("content_distance", "content dist.", 3), ("warp_error", "warp error", 2),
           ("warp_error_stable", "warp error, stabilized", 2),
           ("teacher_tier", "to teacher: tier", 3), ("teacher_naive", "to teacher: naive", 3))


def _markdown(report: dict) -> str:
    s = report["settings"]
    stable = any(m["warp_error_stable"] is not None for styles in report["models"].values() for m in styles.values())
    tier = (f"the Stylizer at scale {s['tier_scale']}" if s["tier"] else
            "n/a: this build's Stylizer has no `scale`, so only the naive baseline is measured")
    header = "| {} | " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(COLUMNS)
    lines = [
        "# Style model report", "",
        f"Photos: {', '.join(s['photos'])} (live/assets/) at {s['size'][0]}x{s['size'][1]}; moving clip: "
        f"{s['frames']} frames of {s['photos'][0]} (live.models.temporal). Regenerate with `live models report`.", "",
        "Metrics in a pretrained feature space: the MobileNetV2 activations of `style-predictor` (details in "
        "`live/models/features.py` and `live/models/report.py`). Distances are 0 for the same image; 1 is far: "
        "nothing in common (Gram) or unrelated (content).", "",
        "- **style dist.**: Gram-matrix distance of the output to the style's reference image, the test card "
        "rendered in that style by painterly-26 (the images painterly-arbitrary's bank was made from) or by "
        "styles-procedural (the trained styles' teacher); lower = closer to the style. n/a: no reference.",
        "- **recognised**: share of photos on which the output's nearest reference is its own style's.",
        "- **content dist.**: feature distance to the input photo at a late layer (0 = content unchanged).",
        f"- **warp error**: `temporal.warp_error` on the moving clip; the input clip's own: "
        f"{report['input_warp_error']:.2f}. Far above it = flicker. **Stabilized**: with the flicker remover at "
        "its default `/video/stability`" + ("" if stable else " (n/a: this build's Stylizer has no such control)")
        + ".",
        f"- **to teacher**: feature distance (all layers) to the same model at full resolution, of the CPU tier "
        f"({tier}) and of the naive baseline: the model at {s['tier_scale']} of each side, upscaled bilinearly. "
        "Lower = closer to the full-resolution look.", "",
        "## All models", "", header.format("model"), rule]
    for model, styles in report["models"].items():
        lines.append(f"| {model} | " + " | ".join(_number(_mean(styles, key), d) for key, _, d in COLUMNS) + " |")
    for model, styles in report["models"].items():
        lines += ["", f"## {model}", "", f"![{model}]({model}.jpg)", "", header.format("style"), rule]
        lines += [f"| {style} | " + " | ".join(_number(m[key], d) for key, _, d in COLUMNS) + " |"
                  for style, m in styles.items()]
    return "\n".join(lines) + "\n"


def write_report(models_dir: Path, out_dir: Path, names: list[str] | None = None, width: int = 480,
                 height: int = 360, frames: int = 16, styles: list[str] | None = None,
                 photo_names: tuple[str, ...] = PHOTOS, tile_width: int | None = None,
                 tier_scale: float = TIER_SCALE, say: Callable[[str], None] = lambda line: None) -> dict:
    """Write `<model>.jpg` sheets, report.json and report.md into `out_dir`; return the report. `say` hears one
    line per model as it is done (a full report takes minutes)."""
    if width < 64 or height < 64 or frames < 2:
        raise LiveError(f"report size {width}x{height} with {frames} frames is too small",
                        "use at least 64x64 pixels and 2 frames")
    if not 0 < tier_scale <= 1:
        raise LiveError(f"tier scale {tier_scale} is out of range", "use a scale in (0, 1], e.g. 0.25")
    models = _style_models(models_dir, names)
    offered = {path: _styles(path) for path in models}
    unknown = [s for s in styles or [] if not any(s in listed for listed in offered.values())]
    if unknown:
        raise LiveError(f"no style {', '.join(unknown)} in the models reported", "`live models` lists the styles")
    models = [path for path in models if styles is None or set(styles) & set(offered[path])]
    space = FeatureSpace(models_dir / "style-predictor.json", threads=THREADS)
    shots = photos(width, height, photo_names)
    clip = temporal.moving_clip(shots[0], frames=frames, size=(width, height), seed=0)
    ref_images = references(models_dir, styles)
    refs = {style: space(img) for style, img in ref_images.items()}
    report: dict = {"settings": {"photos": list(photo_names), "size": [width, height], "frames": frames,
                                 "tier_scale": tier_scale, "tier": has_tier()},
                    "input_warp_error": temporal.warp_error(clip.frames, clip), "models": {}}
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in models:
        start = time.monotonic()
        metrics, rows = evaluate(path, shots, clip, space, refs, styles, tier_scale)
        say(f"{path.stem}: {len(metrics)} styles in {time.monotonic() - start:.0f} s")
        report["models"][path.stem] = metrics
        lines = [("input", None, shots), *((s, ref_images.get(s), outs) for s, outs in rows)]
        atomic_write(out_dir / f"{path.stem}.jpg", sheet(lines, tile_width or width // 2))
    atomic_write(out_dir / "report.json", (json.dumps(report, indent=2) + "\n").encode())
    atomic_write(out_dir / "report.md", _markdown(report).encode())
    return report
