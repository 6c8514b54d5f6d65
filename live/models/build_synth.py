"""Build the synth's decoder: a small MLP from (pitch, loudness, timbre) to harmonic and noise spectra.

DDSP-style: the network only predicts spectra at control rate; the synth turns them into sound. There is no
recorded dataset here, so the targets come from an analytic timbre model (below) whose four axes are the
synth's timbre controls, and the weights are fitted in numpy: random hidden layers, a ridge-regression head,
then Adam steps through the whole net (a few seconds on two cores). Everything is seeded and computed in
float64 before the cast to float32, so a rebuild writes the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from live.audio.synth import HARMONICS, NOISE_BANDS, TIMBRE_AXES
from live.models.manifest import TensorSpec, atomic_write, write_manifest

NAME = "synth-decoder"
SEED = 375
SAMPLES = 16384  # training points drawn from the analytic model
STEPS = 2000  # Adam steps after the ridge initialisation
BATCH = 128
HIDDEN = (128, 64)
MODEL_RATE = 48000.0  # the noise bands span 0..MODEL_RATE/2
F0_RANGE = (20.0, 14000.0)
F0_OCTAVES = 1.5  # log2(f0/440) is divided by this before the net sees it
NOISE_FLOOR = 1e-5
INPUTS = 2 + len(TIMBRE_AXES)

_HARMONIC = np.arange(1, HARMONICS + 1, dtype=np.float64)
_BAND_HZ = np.linspace(0.0, MODEL_RATE / 2, NOISE_BANDS)


# --- the analytic timbre model: what each axis means, as targets for the fit -----------------------------------

def formant_hz(formant: np.ndarray) -> np.ndarray:
    """Formant axis -1..1 -> resonance centre 250 Hz..4 kHz (four octaves)."""
    return 250.0 * 2.0 ** ((formant + 1.0) * 2.0)


def harmonic_db(f0: np.ndarray, loudness: np.ndarray, timbre: np.ndarray) -> np.ndarray:
    """Level of each harmonic in dB, [N, HARMONICS]: tilt, odd/even balance, one formant, a top roll-off."""
    brightness, hollow, formant = timbre[:, 0:1], timbre[:, 1:2], timbre[:, 2:3]
    freq = f0[:, None] * _HARMONIC
    slope = 9.0 - 5.5 * brightness - 3.0 * (loudness[:, None] - 0.5)  # dB/octave; louder notes are brighter
    db = -slope * np.log2(_HARMONIC)
    db = db - np.where(_HARMONIC % 2 == 0, 15.0 * (hollow + 1.0), 0.0)  # up to -30 dB on even harmonics
    db = db + 15.0 * np.exp(-0.5 * (np.log2(freq / formant_hz(formant)) / 0.4) ** 2)
    return db - 12.0 * np.maximum(0.0, np.log2(freq / 8000.0))


def noise_gains(timbre: np.ndarray) -> np.ndarray:
    """Breath noise band gains per unit loudness, [N, NOISE_BANDS]: a broad hump an octave above the formant."""
    breath = (timbre[:, 3:4] + 1.0) / 2.0
    centre = 2.0 * formant_hz(timbre[:, 2:3])
    shape = np.exp(-0.5 * (np.log2((_BAND_HZ + 100.0) / centre) / 1.2) ** 2)
    return np.maximum(0.3 * breath**3 * shape, NOISE_FLOOR)


def harmonic_amplitude(timbre: np.ndarray) -> np.ndarray:
    """Overall harmonic amplitude per unit loudness, [N, 1]: breath takes some energy from the tone."""
    return 0.5 * (1.0 - 0.4 * (timbre[:, 3:4] + 1.0) / 2.0)


def targets(f0: np.ndarray, loudness: np.ndarray, timbre: np.ndarray) -> np.ndarray:
    """What the net's pre-activation heads should output: [logits | log noise gains | log amplitude]."""
    log_amp = np.maximum(harmonic_db(f0, loudness, timbre) * (np.log(10.0) / 20.0), np.log(NOISE_FLOOR))
    logits = log_amp - log_amp.mean(axis=1, keepdims=True)  # softmax ignores a shift; centring helps the fit
    return np.hstack([logits, np.log(noise_gains(timbre)), np.log(harmonic_amplitude(timbre))])


def sample_inputs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pitches log-uniform over the playable range, loudness and timbre uniform."""
    f0 = np.exp(rng.uniform(np.log(F0_RANGE[0]), np.log(F0_RANGE[1]), n))
    return f0, rng.uniform(0.0, 1.0, n), rng.uniform(-1.0, 1.0, (n, len(TIMBRE_AXES)))


def normalise(f0: np.ndarray, loudness: np.ndarray, timbre: np.ndarray) -> np.ndarray:
    """The net's input vector (the ONNX graph computes the same from the raw inputs)."""
    return np.column_stack([np.log2(f0 / 440.0) / F0_OCTAVES, 2.0 * loudness - 1.0, timbre])


# --- the net and its fit ---------------------------------------------------------------------------------------

@dataclass
class Net:
    """x -> tanh -> tanh -> linear head over [x, h1, h2, 1] (skip connections keep the easy parts linear)."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    head: np.ndarray  # [INPUTS + h1 + h2 + 1, outputs]; the last row is the bias

    def hidden(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h1 = np.tanh(x @ self.w1 + self.b1)
        h2 = np.tanh(h1 @ self.w2 + self.b2)
        return h1, h2, np.hstack([x, h1, h2, np.ones((len(x), 1))])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.hidden(x)[2] @ self.head


def ridge_init(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> Net:
    """Random tanh layers and the least-squares head on them: a good start for the gradient steps."""
    w1 = rng.normal(0.0, 3.0 / np.sqrt(INPUTS), (INPUTS, HIDDEN[0]))  # steep enough for a 0.4-octave formant
    b1 = rng.uniform(-2.0, 2.0, HIDDEN[0])
    w2 = rng.normal(0.0, 2.0 / np.sqrt(HIDDEN[0]), HIDDEN)
    b2 = rng.uniform(-1.0, 1.0, HIDDEN[1])
    net = Net(w1, b1, w2, b2, np.zeros((INPUTS + sum(HIDDEN) + 1, y.shape[1])))
    features = net.hidden(x)[2]
    gram = features.T @ features + 1e-4 * len(x) / 1000 * np.eye(features.shape[1])
    net.head = np.linalg.solve(gram, features.T @ y)
    return net


def adam(rng: np.random.Generator, net: Net, x: np.ndarray, y: np.ndarray) -> None:
    """Refine every weight on minibatch squared error, learning rate decaying linearly to zero."""
    weights = [net.w1, net.b1, net.w2, net.b2, net.head]
    mean = [np.zeros_like(w) for w in weights]
    var = [np.zeros_like(w) for w in weights]
    split = INPUTS + HIDDEN[0]
    for step in range(1, STEPS + 1):
        batch = rng.integers(0, len(x), BATCH)
        xb, yb = x[batch], y[batch]
        h1, h2, features = net.hidden(xb)
        grad_out = 2.0 * (features @ net.head - yb) / yb.size
        grad_features = grad_out @ net.head.T
        grad_z2 = grad_features[:, split:split + HIDDEN[1]] * (1.0 - h2**2)
        grad_z1 = (grad_features[:, INPUTS:split] + grad_z2 @ net.w2.T) * (1.0 - h1**2)
        grads = [xb.T @ grad_z1, grad_z1.sum(0), h1.T @ grad_z2, grad_z2.sum(0), features.T @ grad_out]
        rate = 1e-2 * (1.0 - (step - 1) / STEPS)
        for w, g, m, v in zip(weights, grads, mean, var):
            m *= 0.9
            m += 0.1 * g
            v *= 0.999
            v += 0.001 * g * g
            w -= rate * (m / (1.0 - 0.9**step)) / (np.sqrt(v / (1.0 - 0.999**step)) + 1e-8)


def fit_error(net: Net, rng: np.random.Generator) -> dict[str, float]:
    """Mean |error| in dB on held-out points, over the parts that are audible (within 60 dB of the loudest)."""
    f0, loudness, timbre = sample_inputs(rng, 4096)
    want, got = targets(f0, loudness, timbre), net(normalise(f0, loudness, timbre))

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def db_error(target: np.ndarray, fitted: np.ndarray) -> float:
        audible = target > target.max(axis=1, keepdims=True) * 1e-3
        return round(float(np.abs(20.0 * np.log10(fitted[audible] / target[audible])).mean()), 3)

    h, n = HARMONICS, HARMONICS + NOISE_BANDS
    return {
        "harmonics_db": db_error(softmax(want[:, :h]), softmax(got[:, :h])),
        "noise_db": db_error(np.exp(want[:, h:n]), np.exp(got[:, h:n])),
        "amplitude_db": db_error(np.exp(want[:, n:]), np.exp(got[:, n:])),
    }


def fit(seed: int = SEED) -> tuple[Net, dict[str, float]]:
    rng = np.random.default_rng(seed)
    f0, loudness, timbre = sample_inputs(rng, SAMPLES)
    x, y = normalise(f0, loudness, timbre), targets(f0, loudness, timbre)
    net = ridge_init(rng, x, y)
    adam(rng, net, x, y)
    return net, fit_error(net, rng)


# --- the ONNX graph --------------------------------------------------------------------------------------------

def _const(name: str, value: np.ndarray | float) -> TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def to_onnx(net: Net) -> onnx.ModelProto:
    """The graph: clip and normalise the raw inputs, the MLP, then softmax / exp heads scaled by loudness."""
    head, bias = net.head[:-1], net.head[-1]
    initializers = [
        _const("f0_min", F0_RANGE[0]), _const("f0_max", F0_RANGE[1]),
        _const("f0_scale", 1.0 / (np.log(2.0) * F0_OCTAVES)), _const("f0_shift", -np.log2(440.0) / F0_OCTAVES),
        _const("zero", 0.0), _const("one", 1.0), _const("minus_one", -1.0), _const("two", 2.0),
        _const("w1", net.w1), _const("b1", net.b1), _const("w2", net.w2), _const("b2", net.b2),
        _const("w_head", head), _const("b_head", bias),
        numpy_helper.from_array(np.array([HARMONICS, NOISE_BANDS, 1], dtype=np.int64), "head_sizes"),
    ]
    node = helper.make_node
    nodes = [
        node("Clip", ["f0_hz", "f0_min", "f0_max"], ["f0_clipped"]),
        node("Log", ["f0_clipped"], ["f0_log"]),
        node("Mul", ["f0_log", "f0_scale"], ["f0_scaled"]),
        node("Add", ["f0_scaled", "f0_shift"], ["f0_norm"]),
        node("Clip", ["loudness", "zero", "one"], ["loud"]),
        node("Mul", ["loud", "two"], ["loud_twice"]),
        node("Sub", ["loud_twice", "one"], ["loud_norm"]),
        node("Clip", ["timbre", "minus_one", "one"], ["timbre_norm"]),
        node("Concat", ["f0_norm", "loud_norm", "timbre_norm"], ["x"], axis=1),
        node("Gemm", ["x", "w1", "b1"], ["z1"]),
        node("Tanh", ["z1"], ["h1"]),
        node("Gemm", ["h1", "w2", "b2"], ["z2"]),
        node("Tanh", ["z2"], ["h2"]),
        node("Concat", ["x", "h1", "h2"], ["features"], axis=1),
        node("Gemm", ["features", "w_head", "b_head"], ["heads"]),
        node("Split", ["heads", "head_sizes"], ["logits", "noise_log", "amp_log"], axis=1),
        node("Softmax", ["logits"], ["harmonics"], axis=1),
        node("Exp", ["noise_log"], ["noise_unit"]),
        node("Mul", ["noise_unit", "loud"], ["noise"]),
        node("Exp", ["amp_log"], ["amp_unit"]),
        node("Mul", ["amp_unit", "loud"], ["amplitude"]),
    ]

    def tensor(name: str, width: int) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["voices", width])

    graph = helper.make_graph(
        nodes, NAME,
        [tensor("f0_hz", 1), tensor("loudness", 1), tensor("timbre", len(TIMBRE_AXES))],
        [tensor("harmonics", HARMONICS), tensor("noise", NOISE_BANDS), tensor("amplitude", 1)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="live",
                              doc_string="DDSP-style synth decoder fitted to an analytic timbre model")
    model.ir_version = 8  # fixed, so a newer onnx package does not change the bytes
    onnx.checker.check_model(model)
    return model


def tensor_specs() -> tuple[list[TensorSpec], list[TensorSpec]]:
    def spec(name: str, width: int, lo: float, hi: float, doc: str) -> TensorSpec:
        return TensorSpec(name=name, dtype="float32", shape=["voices", width], layout="NC", range=(lo, hi), doc=doc)

    inputs = [
        spec("f0_hz", 1, *F0_RANGE, "fundamental frequency per voice (clipped to the range)"),
        spec("loudness", 1, 0.0, 1.0, "envelope x velocity per voice"),
        spec("timbre", len(TIMBRE_AXES), -1.0, 1.0, "timbre axes: " + ", ".join(n for n, _ in TIMBRE_AXES)),
    ]
    outputs = [
        spec("harmonics", HARMONICS, 0.0, 1.0, "amplitude distribution over harmonics 1..64 (sums to 1)"),
        spec("noise", NOISE_BANDS, 0.0, 1.0,
             "noise amplitude per band, bands linearly spaced 0..Nyquist (gain on unit-variance white noise)"),
        spec("amplitude", 1, 0.0, 1.0, "overall harmonic amplitude (peak of the summed harmonics)"),
    ]
    return inputs, outputs


def build(out_dir: Path) -> Path:
    """Fit, write `synth-decoder.onnx` and its manifest into `out_dir`; the same bytes on every run."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    net, error = fit()
    onnx_path = out_dir / f"{NAME}.onnx"
    atomic_write(onnx_path, to_onnx(net).SerializeToString())
    inputs, outputs = tensor_specs()
    write_manifest(
        onnx_path, name=NAME, kind="synth-decoder", tier="cpu", inputs=inputs, outputs=outputs,
        controls={"harmonics": HARMONICS, "noise_bands": NOISE_BANDS, "latent": len(TIMBRE_AXES),
                  "latent_names": [name for name, _ in TIMBRE_AXES], "control_rate_hz": 375},
        provenance={"command": "python -m live.models.build", "data": "analytic timbre model in build_synth.py",
                    "seed": SEED, "fit_error": error,
                    "method": f"random tanh layers {HIDDEN} + ridge head, then {STEPS} Adam steps on "
                              f"{SAMPLES} samples"},
        licence="MIT",
    )
    return onnx_path
