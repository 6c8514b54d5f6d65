"""The melody model on ONNX Runtime: primed with what was played, then sampled one grid step at a time under the
performer's controls.

The model (kind "music-sequence", trained by `live train music`) reads tokens and their places in the bar
(live/music/tokens.py) and a recurrent state, and gives the next token's logits and the new state. So an answer
costs one run over the phrase (prime) and one run of one step per generated step: the state carries the phrase,
nothing is read twice. The controls act on the logits before each draw:
- temperature divides them (lower: the model's likeliest line; higher: surprises);
- density tilts note starts against rests and holds (0 sparse, 0.5 as trained, 1 busy);
- register keeps note starts within REGISTER_SPAN semitones of the register's centre;
- key lock removes note starts outside the key's scale.
A HOLD after silence (which decodes as a rest) is never drawn, and an answer's first step can be made a note.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from live.errors import LiveError
from live.inference import open_session
from live.models.manifest import load_manifest
from live.music import tokens as tk
from live.music.modes import Controls
from live.music.tokens import Key

KIND = "music-sequence"
REGISTER_SPAN = 12  # note starts stay within an octave of /music/register
DENSITY_TILT = 4.0  # logit tilt at density 0 or 1 (each side): e^4 ~ 55x the odds of a note start
TEMPERATURE_MIN = 0.05
#: What the model's manifest must say, against the grid the live part plays (tokens.py).
GRID = {"vocab": tk.VOCAB, "low": tk.LOW, "high": tk.HIGH, "steps_per_beat": tk.STEPS_PER_BEAT,
        "bar_steps": tk.BAR_STEPS}


@dataclass
class StepCost:
    """What generation has cost: steps drawn and the seconds their runs took (primes apart)."""

    steps: int = 0
    step_s: float = 0.0
    primes: int = 0
    prime_s: float = 0.0

    @property
    def per_step_ms(self) -> float:
        return self.step_s / self.steps * 1000 if self.steps else 0.0


class MusicModel:
    """One loaded melody model. Not thread-safe: the music thread alone uses it."""

    def __init__(self, manifest_path: Path, threads: int = 1) -> None:
        manifest = load_manifest(manifest_path)
        if manifest.kind != KIND:
            raise LiveError(f"{manifest_path} is a {manifest.kind} model, not a melody model ({KIND})",
                            "set [music] model to exported_models/music-lm.json (`live train music` makes it)")
        controls = manifest.controls
        wrong = {key: controls.get(key) for key, want in GRID.items() if controls.get(key) != want}
        if wrong or not isinstance(controls.get("state_shape"), list):
            raise LiveError(f"{manifest_path}: the model's grid {wrong or controls} is not the live part's {GRID} "
                            "(with a state_shape)", "retrain the model with this version (`live train music`)")
        self.name = manifest.name
        self.state_shape = tuple(int(n) for n in controls["state_shape"])
        self.session = open_session(manifest.onnx_path, ("cpu",), threads)  # a few µs a step: no GPU hand-off
        self._run(np.array([tk.REST]), 0, np.zeros(self.state_shape, np.float32))  # the first run allocates: not
        self.cost = StepCost()  # on a beat

    def prime(self, tokens: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
        """Run the model over `tokens` (the first at grid step `start`) from a fresh state: the logits for the step
        after them and the state there."""
        began = time.perf_counter()
        logits, state = self._run(tokens, start, np.zeros(self.state_shape, np.float32))
        self.cost.primes += 1
        self.cost.prime_s += time.perf_counter() - began
        return logits, state

    def step(self, token: int, position: int, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One token at grid step `position` on from `state`: the next logits and state."""
        began = time.perf_counter()
        out = self._run(np.array([token], np.int64), position, state)
        self.cost.steps += 1
        self.cost.step_s += time.perf_counter() - began
        return out

    def _run(self, tokens: np.ndarray, start: int, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        feeds = {"tokens": tokens.reshape(1, -1).astype(np.int64),
                 "positions": tk.positions(len(tokens), start).reshape(1, -1),
                 "state": state}
        logits, state_out = self.session.run(["logits", "state_out"], feeds)
        return logits[0, -1], state_out

    def line(self, prime: np.ndarray, start: int, key: Key | None, rng: np.random.Generator) -> Line:
        """A melody continuing `prime` (which ends at grid step `start`), to be drawn step by step."""
        return Line(self, prime, start, key, rng)


class Line:
    """A melody the model draws a few steps at a time (a beat's worth, just before the beat), so an answer costs
    a prime and one run a step, spread over its beats, and the controls of each moment shape its steps."""

    def __init__(self, model: MusicModel, prime: np.ndarray, start: int, key: Key | None,
                 rng: np.random.Generator) -> None:
        self.model, self.key, self.rng = model, key, rng
        self.start = start
        self.logits, self.state = model.prime(prime, start - len(prime))
        self.tokens: list[int] = []
        self._previous = int(prime[-1]) if len(prime) else tk.REST
        self._fed = True  # the last token drawn has been run through the model (its logits are the next step's)

    @property
    def end(self) -> int:
        """The grid step after the last drawn."""
        return self.start + len(self.tokens)

    def draw(self, steps: int, controls: Controls, first_note: bool = False, no_hold: bool = False) -> None:
        """`steps` more tokens under `controls` (key lock in the line's key). `first_note`: the first of them starts
        a note; `no_hold`: the first of them does not hold the note before (it was released)."""
        bias = logit_bias(controls, self.key)
        for i in range(steps):
            if not self._fed:
                self.logits, self.state = self.model.step(self._previous, self.end - 1, self.state)
            token = draw(self.logits, bias, controls.temperature, self.rng,
                         silent=self._previous == tk.REST or (no_hold and i == 0), note=first_note and i == 0)
            self.tokens.append(token)
            self._previous, self._fed = token, False


def logit_bias(controls: Controls, key: Key | None) -> np.ndarray:
    """What the controls add to every step's logits (before the temperature): -inf removes a token."""
    bias = np.zeros(tk.VOCAB)
    tilt = DENSITY_TILT * (2 * min(max(controls.density, 0.0), 1.0) - 1)
    bias[tk.FIRST_PITCH:] += tilt / 2
    bias[[tk.REST, tk.HOLD]] -= tilt / 2
    pitches = np.arange(tk.LOW, tk.HIGH + 1)
    allowed = np.abs(pitches - controls.register) <= REGISTER_SPAN
    if controls.key_lock and key is not None:  # a key has 7 or 8 of any 13 semitones: never all removed
        allowed &= np.isin(pitches % 12, sorted(key.scale()))
    bias[tk.FIRST_PITCH:][~allowed] = -np.inf
    return bias


def draw(logits: np.ndarray, bias: np.ndarray, temperature: float, rng: np.random.Generator, silent: bool,
         note: bool = False) -> int:
    """One token from `logits` with `bias` at `temperature`. `silent`: nothing sounds, so HOLD is not drawn;
    `note`: only a note start is."""
    z = logits.astype(np.float64) / max(temperature, TEMPERATURE_MIN) + bias
    if silent or note:
        z[tk.HOLD] = -np.inf
    if note:
        z[tk.REST] = -np.inf
    z -= z.max()
    p = np.exp(z)
    cumulative = np.cumsum(p)
    return int(min(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"), len(p) - 1))
