"""The music part: hears the performer, keeps what they play on the show's beat grid, and plays the notes the
music mode writes for each coming beat, exactly on the grid, on the synth and/or a MIDI output.

One `music` thread does it all, off the audio and video paths:
- it drains the performer's note events (the [midi] notes event, /synth/note: from MIDI in or OSC, each with the
  time it arrived) and places them on the grid with the show's Clock (tempo.py: internal, taps, MIDI clock, Link);
- PLAN_AHEAD_S plus the synth's note delay before each beat, it asks the mode playing (/music/mode) for that beat's
  notes (modes.py), with the /music/* controls and everything heard up to then;
- it sends each note with its grid time: `/music/note` events dated the note delay before it (the synth plays a
  note that long after its time, so it sounds exactly on the grid; the AudioEngine plays /music/note like
  /synth/note), and/or to MIDI out (midi_out.py), which sends each at its grid time. A note's release is sent with
  it, dated too, so nothing is left sounding whatever the mode does next.

A mode is one factory in MODES. A mode that cannot start (its model missing, not built in) is one line and the
show plays on without it; so is a MIDI output that is not there.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from live.audio.engine import MUSIC_NOTE, NOTE
from live.audio.render_process import note_delay
from live.control.midi import API
from live.control.priority import favour_this_thread
from live.control.tempo import Clock
from live.errors import LiveError
from live.music import tokens as tk
from live.music.accompany import Accompany
from live.music.answer import Answer
from live.music.midi_out import MidiOut
from live.music.model import MusicModel
from live.music.modes import PLAN_AHEAD_S, Controls, Heard, Mode
from live.music.morph import LOOP_STEPS, Morph
from live.params import Event, Param, ParamTree, Value

P = "/music/"
MODE_NAMES = ("off", "answer", "accompany", "morph")
OUTPUTS = ("synth", "midi", "both")
KEYS = {key.name(): key for key in (tk.Key(tonic, minor) for minor in (False, True) for tonic in range(12))}
HEARD_STEPS = 9 * tk.BAR_STEPS  # what the modes are given: the longest call (8 bars) and a bar more
IDLE_S = 0.05  # the thread looks at the clock at least this often (a performer's note wakes it at once)
REPLAN_MARGIN_S = 0.008  # a beat planned empty is planned again on a release up to this long (plus the note delay)
# before it: the render process needs the note delay, this covers the re-plan itself
RELEASE_S = 0.01  # a generated note is released this long before its end on the grid (repeated notes re-strike)
CLOSE_S = 1.0


with warnings.catch_warnings():  # `register` names ABCMeta.register on the class, unused by pydantic: harmless
    warnings.filterwarnings("ignore", 'Field name "register"', UserWarning)

    class MusicSection(BaseModel):
        """`[music]`: generated music that plays along with the performer; the starting values of its controls."""

        model_config = ConfigDict(extra="forbid")
        mode: Literal[MODE_NAMES] = Field("answer", description="off; answer (call and response); accompany (bass "
                                                                "and chords under what is played); morph (between "
                                                                "two melodies)")
        model: str = Field("../exported_models/music-lm.json", description="the melody model (`live train music`)")
        encoder: str = Field("../exported_models/music-vae-encoder.json",
                             description="morph: the bar VAE's encoder (`live train music`)")
        decoder: str = Field("../exported_models/music-vae-decoder.json", description="morph: the bar VAE's decoder")
        threads: int = Field(1, ge=1, le=8, description="ONNX Runtime threads for the music model")
        output: Literal[OUTPUTS] = Field("synth", description="who plays the generated notes: the show's synth, "
                                                              "MIDI out, or both")
        midi_out: str = Field("", description="MIDI output port (the start of its name); \"\" = a virtual port "
                                              "'live:music' other software connects to")
        channel: int = Field(1, ge=1, le=16, description="MIDI out channel")
        temperature: float = Field(0.9, ge=0.05, le=2.0)
        density: float = Field(0.5, ge=0.0, le=1.0)
        register: int = Field(72, ge=tk.LOW, le=tk.HIGH)
        key_lock: bool = True
        key: Literal[("auto", *KEYS)] = "auto"
        call_bars: int = Field(2, ge=1, le=8)
        answer_bars: int = Field(1, ge=1, le=8)
        morph: float = Field(0.0, ge=0.0, le=1.0)
        velocity: float = Field(0.8, ge=0.0, le=1.0)


def _answer(section: MusicSection, resolve: Callable[[str], Path]) -> Mode:
    return Answer(MusicModel(resolve(section.model), section.threads))


def _morph(section: MusicSection, resolve: Callable[[str], Path]) -> Mode:
    return Morph(resolve(section.encoder), resolve(section.decoder), threads=section.threads)


#: The modes by /music/mode name: factory(section, resolve a show path) -> Mode; LiveError if it cannot play.
MODES: dict[str, Callable[[MusicSection, Callable[[str], Path]], Mode]] = {
    "answer": _answer,
    "accompany": lambda section, resolve: Accompany(),
    "morph": _morph,
}


def controls_of(values: Mapping[str, Value]) -> Controls:
    """The /music/* parameters as a mode reads them."""
    key = str(values[P + "key"])
    return Controls(temperature=float(values[P + "temperature"]), density=float(values[P + "density"]),
                    register=int(values[P + "register"]), key_lock=bool(values[P + "key_lock"]),
                    key=None if key == "auto" else KEYS[key], call_bars=int(values[P + "call_bars"]),
                    answer_bars=int(values[P + "answer_bars"]), morph=float(values[P + "morph"]),
                    velocity=float(values[P + "velocity"]))


class _Waking(deque):
    """The performer's notes as the tree hands them over (under its lock), waking the music thread: a release just
    before a beat is answered on that beat, not 50 ms later."""

    def __init__(self, wake: threading.Event, maxlen: int) -> None:
        super().__init__(maxlen=maxlen)
        self.wake = wake

    def append(self, item: Any) -> None:
        super().append(item)
        self.wake.set()


class MusicPlayer:
    """The `[music]` part (live/parts.py)."""

    @staticmethod
    def params(section: MusicSection) -> tuple[list[Param], list[Event]]:
        s = section
        params = [
            Param(P + "mode", "enum", s.mode, choices=MODE_NAMES, doc="what the generated music does: off, answer "
                  "(call and response), accompany (bass and chords), morph (between two melodies)"),
            Param(P + "temperature", "float", s.temperature, 0.05, 2.0,
                  doc="sampling temperature: low = the model's likeliest line, high = surprises"),
            Param(P + "density", "float", s.density, 0.0, 1.0, doc="0 = sparse (long notes, rests), 1 = busy"),
            Param(P + "register", "int", s.register, tk.LOW, tk.HIGH, unit="note",
                  doc="MIDI pitch the generated line centres on (it stays within an octave of it)"),
            Param(P + "key_lock", "bool", s.key_lock, doc="generated notes stay in the key"),
            Param(P + "key", "enum", s.key, choices=("auto", *KEYS),
                  doc="the key for the key lock; auto = the key of what the performer played"),
            Param(P + "call_bars", "int", s.call_bars, 1, 8, unit="bars", doc="how much of what was played an "
                                                                               "answer listens to"),
            Param(P + "answer_bars", "int", s.answer_bars, 1, 8, unit="bars", doc="how long an answer lasts"),
            Param(P + "morph", "float", s.morph, 0.0, 1.0, doc="morph mode: 0 = melody A, 1 = melody B"),
            Param(P + "velocity", "float", s.velocity, 0.0, 1.0, doc="loudness of the generated notes"),
            Param(P + "output", "enum", s.output, choices=OUTPUTS,
                  doc="who plays the generated notes: the synth, MIDI out ([music] midi_out), or both"),
        ]
        note = Event(MUSIC_NOTE, (("note", "int", 0, 127), ("velocity", "float", 0.0, 1.0)),
                     doc="a generated note (MIDI number, velocity 0..1; 0 releases it): the synth plays it")
        stores = [Event(P + f"store_{which}", (), doc=f"morph: the last two bars played become melody "
                                                     f"{which.upper()} (heard from the next loop on)")
                  for which in "ab"]
        return params, [note, *stores]

    def __init__(self, section: MusicSection, tree: ParamTree, clock: Clock, resolve: Callable[[str], Path],
                 event_delay: float, midi_api: str = "default", performer: str = NOTE,
                 say: Callable[[str], None] = print) -> None:
        """`resolve` turns a path in the show into a file; `event_delay` is how long after its time the synth
        plays a note (AudioEngine.event_delay); `performer` is the event the performer's notes come as."""
        self.section, self.tree, self.clock, self.resolve = section, tree, clock, resolve
        self.delay, self.say = event_delay, say
        self.performer = performer
        self.midi_api = midi_api
        self.midi: MidiOut | None = None  # opened when the output first includes MIDI
        self._modes: dict[str, Mode] = {}
        self._unavailable: dict[str, str] = {}  # mode -> why it cannot play (said once)
        self._heard: deque | None = None
        self._stores: deque | None = None
        self._held: dict[int, float] = {}  # pitch -> grid step (fractional) it began
        self._done: deque[tuple[float, float, int]] = deque(maxlen=512)  # (begin, end, pitch), grid steps
        self._last_off: float | None = None
        self._released_at: float | None = None  # perf_counter() time of the last release that left nothing held
        self._measured: float | None = None  # the release whose answer latency was taken
        self._next: int | None = None  # the next beat to plan
        self._empty: int | None = None  # the last beat planned, if the answer mode gave it no notes (a key held)
        self.key = ""  # the key heard in the performer's recent notes
        self.latency_s: float | None = None  # the last answer: from the release to its first note on the grid
        self.latencies: deque[float] = deque(maxlen=64)
        self.notes = self.late_beats = 0
        self.plan_s = 0.0  # the slowest plan() so far
        self.problem = ""
        self._stop = threading.Event()
        self._wake = threading.Event()  # a performer's note, or stop
        self._thread = threading.Thread(target=self._run, name="music", daemon=True)

    @classmethod
    def from_show(cls, show: Any, tree: ParamTree, clock: Clock, say: Callable[[str], None]) -> MusicPlayer:
        """The show's music part from its [music] section (opens nothing)."""
        audio = show.audio
        delay = note_delay(audio.blocksize, audio.samplerate) if audio.enabled else 0.0
        return cls(show.music, tree, clock, show.resolve, delay, show.midi.api, show.midi.notes or NOTE, say)

    # --- lifecycle ---------------------------------------------------------------------------------------

    def open(self) -> str:
        """Load the starting mode's model and open MIDI out; either failing is a line, and the show plays on."""
        name = self.section.mode
        mode = self._mode(name)
        if mode is not None:
            lines = [f"Music: {name} ({self._describe(mode)})"]
        else:
            lines = [f"Music: {name}: {self._unavailable[name]}" if name != "off" else
                     "Music: off (/music/mode starts it)"]
        if self.section.output != "synth":
            lines.append(self._midi_out().open())
        self._heard = self.tree.listen(self.performer, timed=True, into=_Waking(self._wake, 256))
        self._stores = self.tree.listen(P + "store_")
        self._thread.start()
        return "\n".join(lines)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=CLOSE_S)
        for queue in (self._heard, self._stores):
            if queue is not None:
                self.tree.unlisten(queue)
        self._heard = self._stores = None
        if self.midi is not None:
            self.midi.close()
        if self.notes:
            self.say(f"Music: {self.summary()}")

    def _mode(self, name: str) -> Mode | None:
        """The mode called `name`, made on first use; None (said once) if it cannot play."""
        if name in self._modes or name in self._unavailable or name == "off":
            return self._modes.get(name)
        factory = MODES.get(name)
        if factory is None:
            self._unavailable[name] = f"mode {name} is not available in this version (modes: {', '.join(MODES)})"
        else:
            try:
                self._modes[name] = factory(self.section, self.resolve)
                return self._modes[name]
            except LiveError as err:
                self._unavailable[name] = f"{err.what}; the show plays on without it — fix: {err.fix}"
            except Exception as err:  # a model that loads but does not fit (ORT, a manifest's odd controls)
                self._unavailable[name] = (f"mode {name} could not start ({type(err).__name__}: {err}); the show "
                                           "plays on without it")
        if self._thread.is_alive():  # open() says it as part of its line
            self.say(f"Music: {self._unavailable[name]}")
        return None

    def _midi_out(self, opened: bool = False) -> MidiOut:
        """MIDI out, made on first use (`opened`: and opened now, saying what it got)."""
        self.midi = MidiOut(API[self.midi_api], self.section.midi_out, self.section.channel, self.say)
        if opened:
            self.say(self.midi.open())
        return self.midi

    @staticmethod
    def _describe(mode: Mode) -> str:
        model = getattr(mode, "model", None)
        return f"model {model.name}" if model is not None else mode.name

    # --- the music thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        favour_this_thread()  # a beat planned late is a beat not played: it comes before a frame of video
        while not self._stop.is_set():
            try:
                wait = self._tick(time.perf_counter())
            except Exception as err:  # a mode's bug must not stop the show: said once, the next beat tries again
                wait = IDLE_S
                text = f"Music: {type(err).__name__}: {err}"
                if text != self.problem:
                    self.problem = text
                    self.say(text)
            if wait > 0 and self._wake.wait(wait):
                self._wake.clear()

    def _tick(self, now: float) -> float:
        """Hear, then plan the next beat if its time has come; how long to wait before looking again."""
        released = self._hear()
        while self._stores:
            self._store(self._stores.popleft()[0][-1])
        clock, lead = self.clock, PLAN_AHEAD_S + self.delay
        if released and self._empty is not None:  # released after its beat was planned: plan it again if in time
            beat, self._empty = self._empty, None
            if clock.beat_at(now + self.delay + REPLAN_MARGIN_S) < beat:
                self._plan(beat, now)
        ahead = clock.beat_at(now + lead)
        if self._next is not None and self._next - ahead > 2:  # the clock started again (a MIDI clock's start)
            self._regrid(clock.beat_at(now) * tk.STEPS_PER_BEAT)
        if self._next is None or self._next - ahead > 2:
            self._next = math.floor(ahead) + 1
        if ahead >= self._next:
            beat, self._next = self._next, self._next + 1
            if clock.beat_at(now + self.delay) >= beat:  # the machine kept us away: too late to play it
                self.late_beats += 1
                self._next = math.floor(ahead) + 1
            else:
                self._plan(beat, now)
            return 0.0
        bpm = clock.bpm
        return min((self._next - ahead) * 60.0 / bpm, IDLE_S) if clock.running and bpm > 0 else IDLE_S

    def _hear(self) -> bool:
        """The performer's notes since the last look, onto the grid (each at the time it was played); True if a
        release left nothing held."""
        heard, beat_at, released = self._heard, self.clock.beat_at, False
        while heard:
            _, (pitch, velocity), at = heard.popleft()
            step = beat_at(at) * tk.STEPS_PER_BEAT
            begun = self._held.pop(pitch, None)
            if begun is not None:  # a release, or the same key struck again
                self._done.append((begun, step, pitch))
            if velocity > 0:
                self._held[pitch] = step
            elif begun is not None and not self._held:
                self._last_off, self._released_at, released = step, at, True
        return released

    def _store(self, which: str) -> None:
        """/music/store_a or _b: the two bars that end at the bar line after the last note played become morph's
        melody A or B; nothing played, or morph unable to play, is a line."""
        mode = self._mode("morph")
        ends = [end for _, end, _ in self._done]
        if mode is None or not ends:
            self.say(f"Music: nothing to store as melody {which.upper()}: " +
                     ("play a phrase first" if mode is not None else self._unavailable["morph"]))
            return
        end = math.ceil(max(ends) / tk.BAR_STEPS) * tk.BAR_STEPS
        try:
            mode.store(which, self.heard(time.perf_counter()).notes, end - LOOP_STEPS)
            self.say(f"Music: melody {which.upper()} stored for morph (two bars)")
        except LiveError as err:
            self.say(f"Music: {err.what}; fix: {err.fix}")

    def _regrid(self, step: float) -> None:
        """The grid started again: what was played before is on the old one, so it is forgotten (a key still
        held begins now)."""
        self._done.clear()
        self._held = dict.fromkeys(self._held, step)
        self._last_off = self._released_at = None

    def heard(self, now: float) -> Heard:
        """What the performer played lately, on the grid (notes still held last up to now)."""
        step = self.clock.beat_at(now) * tk.STEPS_PER_BEAT
        recent = [(b, e, p) for b, e, p in self._done if e > step - HEARD_STEPS]
        recent += [(b, step, p) for p, b in self._held.items()]
        notes = sorted(tk.Note(round(b), max(round(e) - round(b), 1), p) for b, e, p in recent)
        key = tk.key_of(notes)
        self.key = key.name() if notes else ""
        return Heard(tuple(notes), step, bool(self._held), self._last_off, key)

    def _plan(self, beat: int, now: float) -> None:
        """Ask the mode for the notes of `beat` and send them, each dated for its place on the grid."""
        values = self.tree.snapshot
        mode = self._mode(str(values[P + "mode"]))
        if mode is None:
            return
        controls = controls_of(values)
        start = beat * tk.STEPS_PER_BEAT
        began = time.perf_counter()
        notes = mode.plan(self.heard(now), start, tk.STEPS_PER_BEAT, controls)
        self.plan_s = max(self.plan_s, time.perf_counter() - began)
        # an answer waits for the release: one that comes after its beat was planned, but before it, asks again
        self._empty = beat if not notes and mode.name == "answer" and self._held else None
        beat_now, seconds_per_step = self.clock.beat_at(now), 60.0 / self.clock.bpm / tk.STEPS_PER_BEAT
        output = values[P + "output"]

        def at(step: float) -> float:  # the perf_counter() time of a grid step, at the tempo now
            return now + (step - beat_now * tk.STEPS_PER_BEAT) * seconds_per_step

        for note in notes:
            on, end = at(note.start), at(note.start + note.steps)
            off = end - min(RELEASE_S, (end - on) / 4)
            if output in ("synth", "both"):
                self.tree.emit(MUSIC_NOTE, note.pitch, controls.velocity, at=on - self.delay)
                self.tree.emit(MUSIC_NOTE, note.pitch, 0.0, at=off - self.delay)
            if output in ("midi", "both"):
                (self.midi or self._midi_out(opened=True)).note(on, off, note.pitch, controls.velocity)
            self.notes += 1
        if notes and mode.name == "answer" and not self._held and self._released_at is not None \
                and self._measured != self._released_at:
            self._measured = self._released_at
            self.latency_s = at(min(n.start for n in notes)) - self._released_at
            self.latencies.append(self.latency_s)

    # --- what the HUD, the status page and the summary read ------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The mode playing, the key heard, the answer latency (the last and the worst of the recent), the model's
        steps and their cost, notes sent, beats missed, MIDI out's counters."""
        mode = str(self.tree.snapshot.get(P + "mode", self.section.mode))
        model = getattr(self._modes.get(mode), "model", None)
        cost = model.cost if model is not None else None
        out = {"mode": mode, "unavailable": self._unavailable.get(mode, ""), "key": self.key,
               "latency_ms": None if self.latency_s is None else round(self.latency_s * 1000, 1),
               "latency_max_ms": round(max(self.latencies) * 1000, 1) if self.latencies else None,
               "steps": cost.steps if cost else 0, "step_ms": round(cost.per_step_ms, 3) if cost else 0.0,
               "prime_ms": round(cost.prime_s / cost.primes * 1000, 3) if cost and cost.primes else 0.0,
               "plan_max_ms": round(self.plan_s * 1000, 2), "notes": self.notes, "late_beats": self.late_beats}
        if self.midi is not None:
            out["midi"] = self.midi.stats()
        return out

    def summary(self) -> str:
        """What the part did, for the end of the show: notes, answers' latency, the model's cost per step."""
        s = self.stats()
        latency = (f", answers {s['latency_ms']:.0f} ms after the phrase (worst {s['latency_max_ms']:.0f} ms)"
                   if s["latency_ms"] is not None else "")
        return (f"{s['notes']} notes{latency}, {s['steps']} model steps at {s['step_ms']:.3f} ms a step (prime "
                f"{s['prime_ms']:.2f} ms), slowest beat planned in {s['plan_max_ms']:.1f} ms, {s['late_beats']} "
                "beats missed")

    def status(self) -> str:
        s = self.stats()
        if s["mode"] == "off" or s["unavailable"]:
            return f"music {s['mode']}" + (f": {s['unavailable']}" if s["unavailable"] else "")
        key = f", hears {s['key']}" if s["key"] else ""
        latency = f", answer {s['latency_ms']:.0f} ms after the phrase" if s["latency_ms"] is not None else ""
        steps = f", {s['steps']} steps at {s['step_ms']:.2f} ms" if s["steps"] else ""
        late = f", {s['late_beats']} beats missed" if s["late_beats"] else ""
        midi = f"; MIDI out {s['midi']['sent']} sent, {s['midi']['dropped']} dropped" if "midi" in s else ""
        return f"music {s['mode']}{key}, {s['notes']} notes{latency}{steps}{late}{midi}"
