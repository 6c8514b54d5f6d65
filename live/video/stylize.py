"""The model stage: a uint8 BGR frame through an image-to-image ONNX model, steered by the parameter tree.

The model does its own pre/post-processing inside the graph, so this stage hands over the camera's bytes and
gets display-ready bytes back; per frame Python only builds a tiny style-weights vector.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from live.errors import LiveError
from live.inference import BACKENDS, Session
from live.models.manifest import Manifest, load_manifest
from live.params import Event, Param
from live.parts import BasePart
from live.video import stability
from live.video.upsample import downscale, guided_upsample


def style_names(manifest: Manifest) -> tuple[str, ...]:
    return tuple(manifest.controls.get("styles", ())) or ("default",)


def video_params(manifest: Manifest) -> list[Param]:
    """The /video/* parameters this model offers: two style slots, a crossfade between them, and strength."""
    styles = style_names(manifest)
    second = styles[1] if len(styles) > 1 else styles[0]
    return [
        Param("/video/style_a", "enum", styles[0], 0, len(styles) - 1, doc="style in slot A (name or index)",
              choices=styles),
        Param("/video/style_b", "enum", second, 0, len(styles) - 1, doc="style in slot B (name or index)",
              choices=styles),
        Param("/video/blend", "float", 0.0, 0.0, 1.0, doc="crossfade from style A (0) to style B (1)"),
        Param("/video/strength", "float", 1.0, 0.0, 1.0, doc="stylization: 0 = camera image, 1 = full style"),
    ]


class Stylizer(BasePart):
    """Runs one image-to-image model on frames; `process` is the whole per-frame work.

    Constructing one reads the manifest (its parameters are known before anything loads); `open` loads the model
    on the inference backend. With `scale` < 1 (the CPU tier) the model sees the frame at that fraction of each
    side and its output is carried back to full size along the camera's edges (video/upsample.py). The model's
    output goes through the flicker remover (video/stability.py, /video/stability) at the model's own size: on the
    tier that is a sixteenth of the pixels, and the edges come from the current camera frame afterwards."""

    def __init__(self, manifest_path: Path, providers: tuple[str, ...], threads: int = 0,
                 backend: str = "onnxruntime", scale: float = 1.0) -> None:
        self.manifest = load_manifest(manifest_path)
        if self.manifest.kind != "image-to-image":
            raise LiveError(f"{manifest_path} is a {self.manifest.kind} model, not an image-to-image one",
                            "set [video] model to a style model's manifest")
        self._open_session = BACKENDS.get(backend)
        self.providers, self.threads = providers, threads
        self.session: Session | None = None
        self.styles = style_names(self.manifest)
        self._frame_input = self.manifest.inputs[0].name
        self._style_input = self.manifest.controls.get("style_input")
        self._strength_input = self.manifest.controls.get("strength_input")
        self._output = self.manifest.outputs[0].name
        self.scale = scale
        self.stabilizer = stability.Stabilizer()
        self._slots: tuple = ()  # the style slots of the last frame

    def params(self) -> tuple[list[Param], list[Event]]:
        stable = Param("/video/stability", "float", stability.DEFAULT, 0.0, 1.0,
                       doc="flicker removal: blend with the previous output moved along the motion; 0 = off")
        return [*video_params(self.manifest), stable], []

    def open(self) -> str:
        self.session = self._open_session(self.manifest.onnx_path, self.providers, self.threads)
        return self.session.describe()

    def status(self) -> str:
        return f"style {self.manifest.name} on {self.session.provider if self.session else 'nothing (closed)'}"

    def feeds(self, image: np.ndarray, values: Mapping) -> dict[str, np.ndarray]:
        """The model's inputs for one frame under the current parameter values."""
        feeds = {self._frame_input: image}
        if self._style_input:
            weights = np.zeros(len(self.styles), np.float32)
            blend = float(values["/video/blend"])
            weights[self.styles.index(values["/video/style_a"])] += 1.0 - blend
            weights[self.styles.index(values["/video/style_b"])] += blend
            feeds[self._style_input] = weights
        if self._strength_input:
            feeds[self._strength_input] = np.array([values["/video/strength"]], np.float32)
        return feeds

    def process(self, image: np.ndarray, values: Mapping, t: float = 0.0) -> np.ndarray:
        """The stylized frame. Values without /video/stability (a caller that builds them by hand) mean off:
        each frame alone. Choosing another style in a slot cuts to it; the faders fade through the stabilizer."""
        small = image if self.scale >= 1.0 else downscale(image, self.scale)
        styled = self.session.run([self._output], self.feeds(small, values))[0]
        slots = values.get("/video/style_a"), values.get("/video/style_b")
        if slots != self._slots:  # another style: cut to it, never fade the old one out through the blend
            self.stabilizer.reset()
            self._slots = slots
        styled = self.stabilizer(small, styled, float(values.get("/video/stability", 0.0)))
        return styled if small is image else guided_upsample(small, styled, image)
