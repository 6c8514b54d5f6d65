"""The model stage: a uint8 BGR frame through an image-to-image ONNX model, steered by the parameter tree.

The model does its own pre/post-processing inside the graph, so this stage hands over the camera's bytes and
gets display-ready bytes back; per frame Python only builds a tiny style input: weights per named style, or, for
a model fed a style vector (painterly-arbitrary), the blend of two vectors from its bank and the show's
(live/video/styles.py), which can grow while the show plays.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from live.errors import LiveError
from live.inference import BACKENDS, BoundRun, Session
from live.models.manifest import Manifest, load_manifest
from live.params import Event, Param
from live.parts import BasePart
from live.video import stability
from live.video.styles import StyleBank, grab_event, model_bank
from live.video.upsample import downscale, guided_upsample


#: A fader (blend, strength) that moves this much between two frames shows its new value at once; smaller moves are
#: stabilized less the larger they are. 0.05: an LFO at 0.25 Hz over the whole range at 30 fps still stabilizes.
FADER_CUT = 0.05


def style_names(manifest: Manifest) -> tuple[str, ...]:
    """A style-weights model's style names (a style-vector model's come from its banks: Stylizer.vectors)."""
    return tuple(manifest.controls.get("styles", ())) or ("default",)


def video_params(styles: tuple[str, ...]) -> list[Param]:
    """The /video/* parameters of a style model: two style slots, a crossfade between them, and strength."""
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
                 backend: str = "onnxruntime", show_bank: StyleBank | None = None, scale: float = 1.0) -> None:
        """`show_bank`: the show's own styles, for a model fed a style vector (a name there wins over the model's).
        `scale`: the fraction of each side the model runs at (1 = full size)."""
        self.manifest = load_manifest(manifest_path)
        if self.manifest.kind != "image-to-image":
            raise LiveError(f"{manifest_path} is a {self.manifest.kind} model, not an image-to-image one",
                            "set [video] model to a style model's manifest")
        self._open_session = BACKENDS.get(backend)
        self.providers, self.threads = providers, threads
        self.session: Session | None = None
        self.frames: BoundRun | None = None  # the session's IOBinding frame path, made on open
        self._frame_input = self.manifest.inputs[0].name
        self._style_input = self.manifest.controls.get("style_input")
        self._vector_input = self.manifest.controls.get("style_vector_input")
        self._strength_input = self.manifest.controls.get("strength_input")
        self._output = self.manifest.outputs[0].name
        #: style name -> vector, for a vector model; replaced whole (never mutated), so a frame reads it once
        self.vectors: dict[str, np.ndarray] = {}
        self.styles = () if self._vector_input else style_names(self.manifest)
        #: the newest camera frame the model was fed (what /video/style/grab turns into a style)
        self.last_frame: np.ndarray | None = None
        self.scale = scale
        self.stabilizer = stability.Stabilizer()
        self._slots: tuple = ()  # the style slots of the last frame
        self._faders = (0.0, 0.0)  # /video/blend and /video/strength of the last frame
        if self._vector_input:
            size = self.manifest.input(self._vector_input).shape[0]
            for bank in (model_bank(self.manifest.source, self.manifest.controls), show_bank):
                for name, vector in (bank.vectors() if bank else {}).items():
                    if vector.shape != (size,):
                        raise LiveError(f"style '{name}' in {bank.path} has {vector.size} numbers; "
                                        f"{self.manifest.name} takes {size}",
                                        f"remove it (`live styles remove {name}`) and add its picture again")
                    self.add_style(name, vector)
            if not self.vectors:
                raise LiveError(f"{manifest_path}: its style bank is empty", "rebuild the models (`make models`)")

    @property
    def takes_vectors(self) -> bool:
        """Whether any picture can become a style of this model (it is fed a style vector)."""
        return bool(self._vector_input)

    def add_style(self, name: str, vector: np.ndarray) -> bool:
        """Make `name` play `vector` (from any thread; frames in flight keep the vectors they read). Returns
        whether anything changed."""
        vector = np.asarray(vector, np.float32)
        old = self.vectors.get(name)
        if old is not None and np.array_equal(old, vector):
            return False
        self.vectors = {**self.vectors, name: vector}
        self.styles = tuple(self.vectors)
        return True

    def params(self) -> tuple[list[Param], list[Event]]:
        stable = Param("/video/stability", "float", stability.DEFAULT, 0.0, 1.0,
                       doc="flicker removal: blend with the previous output moved along the motion; 0 = off")
        return [*video_params(self.styles), stable], [grab_event()] if self._vector_input else []

    def open(self) -> str:
        self.session = self._open_session(self.manifest.onnx_path, self.providers, self.threads)
        self.frames = self.session.frame_path([self._output])
        return self.session.describe()

    def warm(self, width: int, height: int) -> None:
        """One run on a black frame of the size that will play (at this stage's scale), off the frame path: ONNX
        Runtime's first run allocates and picks its kernels, and a model swapped in while playing must not make the
        first frame it is given pay for that. The flicker remover is not fed."""
        black = np.zeros((height, width, 3), np.uint8)
        values = {param.address: param.default for param in self.params()[0]}
        self.frames.run(self.feeds(black if self.scale >= 1.0 else downscale(black, self.scale), values))

    def status(self) -> str:
        return f"style {self.manifest.name} on {self.session.provider if self.session else 'nothing (closed)'}"

    def feeds(self, image: np.ndarray, values: Mapping) -> dict[str, np.ndarray]:
        """The model's inputs for one frame under the current parameter values."""
        feeds = {self._frame_input: image}
        if self._vector_input:
            vectors, blend = self.vectors, float(values["/video/blend"])
            a, b = vectors[values["/video/style_a"]], vectors[values["/video/style_b"]]
            feeds[self._vector_input] = (1.0 - blend) * a + blend * b
        elif self._style_input:
            weights = np.zeros(len(self.styles), np.float32)
            blend = float(values["/video/blend"])
            weights[self.styles.index(values["/video/style_a"])] += 1.0 - blend
            weights[self.styles.index(values["/video/style_b"])] += blend
            feeds[self._style_input] = weights
        if self._strength_input:
            feeds[self._strength_input] = np.array([values["/video/strength"]], np.float32)
        return feeds

    def process(self, image: np.ndarray, values: Mapping, t: float = 0.0) -> np.ndarray:
        """The stylized frame: the model's input goes up to the device once, through the model into its reused
        output buffer, and back once. Values without /video/stability (a caller that builds them by hand) mean off:
        each frame alone. Choosing another style in a slot cuts to it; a fader that jumps shows at once, one that
        glides keeps the flicker remover (a performer's move is a wanted change, not flicker)."""
        self.last_frame = image  # what /video/style/grab saves: the camera frame at full size
        small = image if self.scale >= 1.0 else downscale(image, self.scale)
        styled = self.frames.host(self.frames.run(self.feeds(small, values))[0])
        slots = values.get("/video/style_a"), values.get("/video/style_b")
        if slots != self._slots:  # another style: cut to it, never fade the old one out through the blend
            self.stabilizer.reset()
            self._slots = slots
        faders = float(values.get("/video/blend", 0.0)), float(values.get("/video/strength", 1.0))
        moved = max(abs(a - b) for a, b in zip(faders, self._faders))
        self._faders = faders
        amount = float(values.get("/video/stability", 0.0)) * max(0.0, 1.0 - moved / FADER_CUT)
        styled = self.stabilizer(small, styled, amount)
        return styled if small is image else guided_upsample(small, styled, image)
