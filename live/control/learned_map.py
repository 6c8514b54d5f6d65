"""Learned mappings, Wekinator-style: show the inputs, set the outputs by hand, train, and let the model play them.

While `/live/map/record` is on, each tick keeps one example: the `[map] inputs` (any number parameters, measured
ones such as `/in/audio/rms` included) and the `[map] outputs` as the performer holds them. `/live/map/train`
fits a small scikit-learn model in a background thread, exports it to ONNX with a manifest beside the show (and the
examples as .npz), and swaps it in; while `/live/map/run` is on, each tick runs it on ONNX Runtime (CPU, one
thread) and writes every output in one `tree.update`. Values travel as each parameter's controller position 0..1
(`Param.to_normal`), so ranges and response curves (a cutoff's exp) are the parameters' own, not the model's job.

Regression is a one-hidden-layer MLP, classification an MLP classifier whose classes are the output presets seen
while recording. A k-nearest-neighbour model was measured too: exact on its examples but its ONNX graph holds every
example, so a tick cost 0.3 ms at 200 examples and 14 ms at 10,000; the MLP costs about 6 us at any count.
"""

from __future__ import annotations

import difflib
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from live.errors import LiveError
from live.params import Event, Param, ParamTree

if TYPE_CHECKING:
    from live.models.manifest import Manifest
    from live.show import Show

RECORD, RUN, TRAIN, CLEAR, STATE = ("/live/map/record", "/live/map/run", "/live/map/train", "/live/map/clear",
                                    "/live/map/state")
#: Examples kept while recording; past it the oldest are dropped (and counted): at 50 Hz, 3 minutes of showing.
MAX_EXAMPLES = 10_000
#: Output presets a classification may have: each distinct setting of the outputs (positions rounded to PRESET_STEP)
#: recorded is one class.
MAX_PRESETS = 32
PRESET_STEP = 0.01


class MapSection(BaseModel):
    """`[map]`: a learned mapping from some parameters to others."""

    model_config = ConfigDict(extra="forbid")
    inputs: list[str] = Field(default_factory=list, description="number parameters the mapping reads, e.g. "
                                                                "/in/audio/rms (measured) or a fader")
    outputs: list[str] = Field(default_factory=list, description="number parameters it sets, all in one step")
    model: Literal["regression", "classification"] = Field(
        "regression", description="regression: outputs follow the inputs smoothly; classification: each recorded "
                                  "setting of the outputs is a preset, and the nearest pose recalls it")
    file: str = Field("", description="the trained mapping beside the show (NAME.onnx, its manifest NAME.json and "
                                      "the recorded examples NAME.npz); default <show>-map.onnx")
    rate: float = Field(50.0, ge=1, le=100, description="Hz: how often an example is recorded and the mapping runs")
    run: bool = Field(False, description="the mapping runs from the start (/live/map/run)")

    @property
    def enabled(self) -> bool:
        return bool(self.inputs or self.outputs)


def map_files(show: Show) -> tuple[Path, Path, Path]:
    """The mapping's .onnx, manifest and examples beside the show; LiveError if `[map] file` leaves its folder."""
    name = show.map.file or f"{show.path.stem}-map.onnx"
    onnx_path = show.resolve_inside(name, "[map] file")
    if onnx_path.suffix != ".onnx":
        raise LiveError(f"{show.path}: [map] file = '{name}' must end in .onnx",
                        f"e.g. file = \"{show.path.stem}-map.onnx\"")
    return onnx_path, onnx_path.with_suffix(".json"), onnx_path.with_suffix(".npz")


def check(show: Show, tree: ParamTree) -> None:
    """LiveError naming `[map] inputs` or `outputs` for an address that is not a number parameter of the show
    (with the nearest ones), an output that is measured or also an input, or a file outside the show's folder."""
    section = show.map
    if not section.enabled:
        return
    numbers = sorted(a for a, p in tree.params.items() if p.numeric)
    for key, addresses in (("inputs", section.inputs), ("outputs", section.outputs)):
        if not addresses:
            verb = "reads" if key == "inputs" else "sets"
            raise LiveError(f"{show.path}: [map] {key} is empty",
                            f"list the number parameters it {verb}, e.g. {key} = [\"/video/blend\"]")
        for address in addresses:
            param = tree.params.get(address)
            if param is not None and param.numeric:
                if key == "outputs" and param.readonly:
                    raise LiveError(f"{show.path}: [map] outputs: '{address}' is measured (read-only): the mapping "
                                    "cannot set it", "make it an input, and give a parameter it may set")
                continue
            near = difflib.get_close_matches(address, numbers, n=4, cutoff=0.4)
            what = "is not a parameter of this show" if param is None else f"is a {param.type}, not a number"
            raise LiveError(f"{show.path}: [map] {key}: '{address}' {what}" +
                            (f" (nearby: {', '.join(near)})" if near else ""),
                            "give float or int parameters: `live params` lists them")
        twice = sorted({a for a in addresses if addresses.count(a) > 1})
        if twice:
            raise LiveError(f"{show.path}: [map] {key} lists {', '.join(twice)} twice", "list each address once")
    both = sorted(set(section.inputs) & set(section.outputs))
    if both:
        raise LiveError(f"{show.path}: [map] {', '.join(both)} is both an input and an output (it would feed "
                        "itself)", "take it out of one of the two lists")
    map_files(show)


def _positions(params: list[Param], values: np.ndarray) -> np.ndarray:
    """Values (examples x params) as each parameter's controller positions 0..1, float32 for the model."""
    out = np.empty(values.shape, np.float32)
    for j, param in enumerate(params):
        out[:, j] = [param.to_normal(v) for v in values[:, j]]
    return out


def _fix_output_shape(model: Any, outputs: int) -> None:
    """skl2onnx 1.20 reshapes a multi-output MLPRegressor's result to (-1, 1), so a row of 3 outputs comes out as
    3 rows of one (onnx/sklearn-onnx#474): make the final Reshape give (-1, outputs) as scikit-learn does."""
    from onnx import numpy_helper

    graph = model.graph
    last = next(n for n in graph.node if graph.output[0].name in n.output)
    if last.op_type != "Reshape":
        return
    for i, initializer in enumerate(graph.initializer):
        if initializer.name == last.input[1]:
            graph.initializer[i].CopyFrom(numpy_helper.from_array(np.array([-1, outputs], np.int64),
                                                                  initializer.name))
    graph.output[0].type.tensor_type.shape.dim[1].dim_value = outputs


def fit(section: MapSection, inputs: list[Param], outputs: list[Param], x_values: np.ndarray,
        y_values: np.ndarray) -> tuple[bytes, dict[str, Any], str]:
    """Train on recorded values (examples x inputs, examples x outputs): the ONNX model, its manifest fields and one
    line saying how it went. LiveError (nothing trained) for too few examples or, classifying, too few presets."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from skl2onnx import to_onnx
    from threadpoolctl import threadpool_limits

    count = len(x_values)
    if count < 2:
        raise LiveError(f"Map: {count} example(s) recorded; training needs at least 2, nothing changed",
                        "hold /live/map/record at 1 while showing each input and setting the outputs by hand")
    started = time.perf_counter()
    x, y = _positions(inputs, x_values), _positions(outputs, y_values)
    hidden = max(16, len(inputs) + len(outputs))  # Wekinator's rule of thumb is one unit per input; never tiny
    presets: list[list[float]] = []
    with threadpool_limits(1), warnings.catch_warnings():  # one core: the frame path and the synth keep the rest
        warnings.simplefilter("ignore", ConvergenceWarning)
        if section.model == "classification":
            keys, labels = np.unique(np.round(y / PRESET_STEP).astype(np.int64), axis=0, return_inverse=True)
            if not 2 <= len(keys) <= MAX_PRESETS:
                raise LiveError(f"Map: {len(keys)} different setting(s) of the outputs recorded; classification "
                                f"needs 2 to {MAX_PRESETS} presets, nothing changed",
                                "record each pose with the outputs at its preset (or use model = \"regression\")")
            labels = labels.reshape(-1)
            presets = [y_values[labels == k][0].tolist() for k in range(len(keys))]
            model = make_pipeline(StandardScaler(), MLPClassifier(
                hidden_layer_sizes=(hidden,), activation="tanh", solver="lbfgs", max_iter=2000, random_state=0))
            model.fit(x, labels)
            score = float(np.mean(model.predict(x) == labels))
            error = f"{score:.1%} of examples recalled"
            onnx_model = to_onnx(model, x[:1], options={"zipmap": False}, target_opset={"": 17, "ai.onnx.ml": 3})
        else:
            model = make_pipeline(StandardScaler(), MLPRegressor(
                hidden_layer_sizes=(hidden,), activation="tanh", solver="lbfgs", max_iter=2000, alpha=1e-4,
                random_state=0))
            model.fit(x, y[:, 0] if len(outputs) == 1 else y)  # one output: scikit-learn wants a vector
            score = float(np.mean(np.abs(model.predict(x).reshape(y.shape) - y)))
            error = f"mean error {score:.3f} of each output's range"
            onnx_model = to_onnx(model, x[:1], target_opset={"": 17, "ai.onnx.ml": 3})
            _fix_output_shape(onnx_model, len(outputs))
    seconds = time.perf_counter() - started
    scaler = model.steps[0][1]
    label = "label" if section.model == "classification" else onnx_model.graph.output[0].name
    fields = {
        "kind": "param-map", "tier": "cpu", "licence": "trained on the show's own examples",
        "inputs": [{"name": onnx_model.graph.input[0].name, "dtype": "float32", "shape": ["N", len(inputs)],
                    "layout": "NC", "range": (0, 1), "doc": "each input parameter's controller position 0..1 "
                                                            "(Param.to_normal), in the order of controls.inputs"}],
        "outputs": [{"name": label, "dtype": "int64" if presets else "float32",
                     "shape": ["N"] if presets else ["N", len(outputs)],
                     "doc": "the preset's index in controls.presets" if presets else
                            "each output parameter's controller position 0..1 (Param.from_normal)"}],
        "controls": {"model": section.model, "inputs": [p.address for p in inputs],
                     "outputs": [p.address for p in outputs], "presets": presets,
                     "input_mean": scaler.mean_.tolist(), "input_scale": scaler.scale_.tolist()},
        "provenance": {"examples": count, "train_s": round(seconds, 3), "score": score,
                       "estimator": f"StandardScaler + {type(model.steps[1][1]).__name__}({hidden} tanh units, "
                                    "lbfgs)", "trained": time.strftime("%Y-%m-%d %H:%M:%S")},
    }
    what = f"{len(presets)} presets" if presets else f"{len(inputs)} -> {len(outputs)}"
    line = f"Map: trained {section.model} ({what}) on {count} examples in {seconds:.2f} s, {error}"
    return onnx_model.SerializeToString(), fields, line


def save(paths: tuple[Path, Path, Path], model: bytes, fields: dict[str, Any], section: MapSection,
         x_values: np.ndarray, y_values: np.ndarray) -> Path:
    """The examples (.npz), then the model and its manifest (written last, so a manifest always names a whole
    model): each file written whole or not at all. Returns the manifest's path."""
    import io

    from live.models.manifest import atomic_write, write_manifest

    onnx_path, _, npz = paths
    buffer = io.BytesIO()
    np.savez(buffer, inputs=np.array(section.inputs), outputs=np.array(section.outputs), x=x_values, y=y_values)
    atomic_write(npz, buffer.getvalue())
    atomic_write(onnx_path, model)
    return write_manifest(onnx_path, name=onnx_path.stem, **fields)


def load_examples(npz: Path, section: MapSection) -> tuple[np.ndarray, np.ndarray]:
    """The examples saved beside the show; LiveError if unreadable or recorded for other inputs or outputs."""
    try:
        with np.load(npz) as data:
            inputs, outputs = data["inputs"].tolist(), data["outputs"].tolist()
            x, y = data["x"].astype(np.float64), data["y"].astype(np.float64)
    except (OSError, ValueError, KeyError) as err:
        raise LiveError(f"Map: the examples in {npz} cannot be read ({err})",
                        "delete the file and record again") from None
    if inputs != section.inputs or outputs != section.outputs or x.shape != (len(y), len(inputs)):
        raise LiveError(f"Map: the examples in {npz} were recorded for other [map] inputs or outputs",
                        "record again (/live/map/clear, then /live/map/record), or restore the show's [map]")
    return x, y


class Runner:
    """A trained mapping loaded for the show: positions in, the outputs' values out."""

    def __init__(self, manifest: Manifest, tree: ParamTree, section: MapSection) -> None:
        from live.inference import open_session

        controls = manifest.controls
        if (manifest.kind != "param-map" or controls.get("inputs") != section.inputs
                or controls.get("outputs") != section.outputs or controls.get("model") != section.model):
            raise LiveError(f"Map: {manifest.source} was trained for other [map] inputs, outputs or model",
                            "train again (/live/map/train or `live map train SHOW`)")
        self.session = open_session(manifest.onnx_path, ("cpu",), threads=1)
        self.feed = manifest.inputs[0].name
        self.output = manifest.outputs[0].name
        self.tree, self.inputs, self.outputs = tree, section.inputs, section.outputs
        self.presets = controls.get("presets") or []
        self.examples = manifest.provenance.get("examples", 0)
        self._x = np.zeros((1, len(self.inputs)), np.float32)

    def values(self, snapshot: Any) -> dict[str, float]:
        """What the mapping sets the outputs to, for the inputs in `snapshot`. Ranges and curves are looked up
        each time: a reloaded show may have changed them."""
        x, params = self._x, self.tree.params
        for j, address in enumerate(self.inputs):
            x[0, j] = params[address].to_normal(snapshot[address])
        (y,) = self.session.run([self.output], {self.feed: x})
        if self.presets:
            return dict(zip(self.outputs, self.presets[int(y[0])]))
        return {a: params[a].from_normal(u) for a, u in zip(self.outputs, y.reshape(-1).tolist())}


class LearnedMap:
    """The `[map]` of a running show: records, trains in the background and runs at `[map] rate`, in its own
    thread (never the OSC or control thread's time). A failure is said in one line; the show plays on."""

    @staticmethod
    def params(section: MapSection) -> tuple[list[Param], list[Event]]:
        if not section.enabled:
            return [], []
        return ([Param(RECORD, "bool", False, doc="learned map: record examples (the inputs shown, the outputs as "
                                                  "set by hand) while 1"),
                 Param(RUN, "bool", section.run, doc="learned map: the trained mapping sets the outputs while 1")],
                [Event(TRAIN, (), doc="learned map: train on the examples (in the background) and save it beside "
                                      "the show"),
                 Event(CLEAR, (), doc="learned map: forget the recorded examples")])

    def __init__(self, show: Show, tree: ParamTree, say: Callable[[str], None] = print) -> None:
        self.section, self.tree, self.say = show.map, tree, say
        self.enabled = self.section.enabled
        self.paths = map_files(show) if self.enabled else None
        self.inputs, self.outputs = self.section.inputs, self.section.outputs
        self._x = np.zeros((MAX_EXAMPLES, len(self.inputs)))
        self._y = np.zeros((MAX_EXAMPLES, len(self.outputs)))
        self.count = 0  # examples held (at most MAX_EXAMPLES)
        self.dropped = 0  # the oldest forgotten to make room
        self._next = 0  # where the next example goes (a ring)
        self.runner: Runner | None = None
        self.last = ""  # the last line said, for /live/map/state
        self.runs, self.run_s, self.run_max_s = 0, 0.0, 0.0
        self._events: deque = tree.listen("/live/map/") if self.enabled else deque()
        self._training: threading.Thread | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="map", daemon=True)

    # --- lifecycle -----------------------------------------------------------------------------------------

    def open(self) -> str:
        """Load the saved examples and mapping (one line if either cannot be used: the mapping is then off), and
        start ticking."""
        if not self.enabled:
            return ""
        _, manifest_path, npz = self.paths
        notes = []
        if npz.is_file():
            try:
                x, y = load_examples(npz, self.section)
                for row in range(max(0, len(x) - MAX_EXAMPLES), len(x)):
                    self._keep(x[row], y[row])
            except LiveError as err:
                notes.append(f"{err.what}; starting with none")
        if manifest_path.is_file():
            notes.append(self._load(manifest_path))
        else:
            notes.append("no mapping trained yet: record with /live/map/record 1, then send /live/map/train")
        self._thread.start()
        head = (f"Map: {len(self.inputs)} input(s) -> {len(self.outputs)} output(s), {self.section.model}, "
                f"{self.count} example(s)")
        return "; ".join([head, *notes])

    def _load(self, manifest_path: Path) -> str:
        from live.models.manifest import load_manifest

        try:
            self.runner = Runner(load_manifest(manifest_path), self.tree, self.section)
        except LiveError as err:
            self.runner = None
            return f"mapping off: {err.what} (fix: {err.fix})"
        state = "running" if self.tree.snapshot.get(RUN) else "send /live/map/run 1 to run it"
        return f"mapping from {self.paths[0].name} ({self.runner.examples} examples), {state}"

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)
        self.tree.unlisten(self._events)
        training = self._training
        if training is not None:  # a fit takes seconds at most; its files are written whole or not at all
            training.join(timeout=10.0)

    def stats(self) -> dict[str, Any]:
        return {"examples": self.count, "dropped": self.dropped, "runs": self.runs,
                "run_us_mean": 1e6 * self.run_s / self.runs if self.runs else 0.0, "run_us_max": 1e6 * self.run_max_s,
                "training": self.training}

    def status(self) -> str:
        if not self.enabled:
            return ""
        snapshot = self.tree.snapshot
        state = ("training" if self.training else "recording" if snapshot.get(RECORD)
                 else "running" if snapshot.get(RUN) and self.runner else "no mapping" if not self.runner else "off")
        cost = f", {1e6 * self.run_s / self.runs:.0f} us/tick" if self.runs else ""
        dropped = f" ({self.dropped} dropped)" if self.dropped else ""
        return f"Map {state}: {self.count} examples{dropped}{cost}"

    @property
    def training(self) -> bool:
        return self._training is not None and self._training.is_alive()

    def state(self) -> list:
        """The reply to OSC /live/map/state: the mapping's status and the last thing it said."""
        if not self.enabled:
            return [(STATE, ["off: this show has no [map]"])]
        return [(STATE, [self.status() + (f"; {self.last}" if self.last else "")])]

    # --- the tick ------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        period = 1.0 / self.section.rate
        due = time.perf_counter()
        failed = ""
        while not self._stop.wait(max(0.0, due - time.perf_counter())):
            due = max(due + period, time.perf_counter())  # late ticks are not made up
            try:
                self.tick()
            except Exception as err:  # e.g. a reload changed a parameter's type: say it once, keep ticking
                if str(err) != failed:
                    failed = str(err)
                    self._say(f"Map: {err}")

    def tick(self) -> None:
        """Handle /live/map/train and /clear, then record one example or run the mapping once."""
        while self._events:
            address, _ = self._events.popleft()
            if address == TRAIN:
                self.train()
            elif address == CLEAR:
                self.count, self._next = 0, 0
                self._say("Map: examples cleared")
        snapshot = self.tree.snapshot
        if snapshot.get(RECORD):
            self._keep([snapshot[a] for a in self.inputs], [snapshot[a] for a in self.outputs])
        elif snapshot.get(RUN) and self.runner is not None:
            started = time.perf_counter()
            values = self.runner.values(snapshot)
            changed = {a: v for a, v in values.items() if snapshot.get(a) != self.tree.params[a].coerce(v)}
            if changed:  # only what moved: an unchanged write would still wake every watcher of the tree
                self.tree.update(changed, source="map")
            spent = time.perf_counter() - started
            self.runs, self.run_s, self.run_max_s = self.runs + 1, self.run_s + spent, max(self.run_max_s, spent)

    def _keep(self, x: Any, y: Any) -> None:
        self._x[self._next], self._y[self._next] = x, y
        self._next = (self._next + 1) % MAX_EXAMPLES
        if self.count < MAX_EXAMPLES:
            self.count += 1
        else:
            self.dropped += 1

    def examples(self) -> tuple[np.ndarray, np.ndarray]:
        """The examples held, oldest first (copies)."""
        order = np.arange(self._next - self.count, self._next) % MAX_EXAMPLES
        return self._x[order], self._y[order]

    # --- training ------------------------------------------------------------------------------------------

    def train(self) -> None:
        """Fit the examples held now in a background thread; the mapping is swapped in when it is saved."""
        if self.training:
            self._say("Map: already training; wait for it to finish")
            return
        x, y = self.examples()
        self._training = threading.Thread(target=self._train, args=(x, y), name="map-train", daemon=True)
        self._training.start()

    def _train(self, x: np.ndarray, y: np.ndarray) -> None:
        from live.models.manifest import load_manifest

        try:
            params = self.tree.params
            model, fields, line = fit(self.section, [params[a] for a in self.inputs], [params[a] for a in self.outputs],
                                      x, y)
            manifest = save(self.paths, model, fields, self.section, x, y)
            self.runner = Runner(load_manifest(manifest), self.tree, self.section)
        except LiveError as err:
            self._say(f"{err.what} (fix: {err.fix})" if err.fix else err.what)
            return
        except Exception as err:  # a library's failure: one line, the old mapping keeps running
            self._say(f"Map: training failed ({type(err).__name__}: {err}); the previous mapping stays")
            return
        self._say(f"{line}; saved to {manifest.name}")

    def _say(self, line: str) -> None:
        self.last = line
        self.say(line)


# --- `live map` ------------------------------------------------------------------------------------------------

def train_command(show: Show) -> str:
    """`live map train SHOW`: train again on the examples saved beside the show (after changing `[map] model`, say)."""
    from live.graph import build

    paths = _paths_of(show)
    if not paths[2].is_file():
        raise LiveError(f"Map: no examples saved beside the show ({paths[2]})",
                        "record them in the running show (/live/map/record 1), then send /live/map/train")
    x, y = load_examples(paths[2], show.map)
    graph = build(show, window=False, say=lambda _: None)  # the parameters' ranges and curves, as the show has them
    graph.surface.close()
    tree = graph.tree
    inputs, outputs = [tree.params[a] for a in show.map.inputs], [tree.params[a] for a in show.map.outputs]
    model, fields, line = fit(show.map, inputs, outputs, x, y)
    manifest = save(paths, model, fields, show.map, x, y)
    return f"{line}; saved to {manifest}"


def info_lines(show: Show) -> list[str]:
    """`live map info SHOW`: what the mapping reads and sets, its examples, and the trained model (hash checked)."""
    from live.models.manifest import load_manifest

    section = show.map
    onnx_path, manifest_path, npz = _paths_of(show)
    lines = [f"Map: {', '.join(section.inputs)} -> {', '.join(section.outputs)} "
             f"({section.model}, {section.rate:g} Hz)"]
    if npz.is_file():
        try:
            lines.append(f"  examples: {len(load_examples(npz, section)[0])} in {npz}")
        except LiveError as err:
            lines.append(f"  examples: {err.what}")
    else:
        lines.append(f"  examples: none saved yet ({npz})")
    if not manifest_path.is_file():
        lines.append(f"  mapping: not trained yet ({onnx_path})")
        return lines
    try:
        manifest = load_manifest(manifest_path)
    except LiveError as err:
        lines.append(f"  mapping: {err.what}")
        return lines
    made = manifest.provenance
    lines.append(f"  mapping: {onnx_path} (sha256 checked), {made.get('estimator', '?')}, "
                 f"trained {made.get('trained')} on {made.get('examples')} examples in {made.get('train_s')} s, "
                 f"score {made.get('score', 0):.3f}")
    if manifest.controls.get("presets"):
        lines += [f"  preset {i}: {values}" for i, values in enumerate(manifest.controls["presets"])]
    return lines


def _paths_of(show: Show) -> tuple[Path, Path, Path]:
    if not show.map.enabled:
        raise LiveError(f"{show.path} has no [map]", "add [map] with inputs = [...] and outputs = [...]")
    return map_files(show)
