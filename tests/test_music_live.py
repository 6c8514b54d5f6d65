"""Issue 14's live music on real parts: the melody model on ONNX Runtime under the performer's controls, and one show
(`live run`) playing call and response with a JACK MIDI keyboard, its audio and MIDI out recorded frame by frame.

The test's own JACK client is the rest of the band: it sends MIDI clock (so the show's beat grid is the test's: beat k
falls on frame start + k * 24,000 at 120 BPM), plays the phrases into the show's MIDI input at exact frames, and
records what the show plays (its synth's output ports, its MIDI out port), each with its frame. The show plays the
shipped melody model (exported_models/music-lm.json).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import jack
import numpy as np

from fixtures_audio import jack_server  # noqa: F401
from fixtures_live import LiveProcess, free_port, headless_env, show_with, wait_until
from fixtures_midi import unique
from fixtures_music_vae import music_vae  # noqa: F401
from live.audio.pitch import Pitch
from live.music import tokens as tk
from live.music.answer import Answer, copies
from live.music.model import REGISTER_SPAN, MusicModel
from live.music.modes import Controls, Heard
from live.music.tokens import Key, Note

RATE, BLOCK = 48000, 128
BPM = 120
BEAT = RATE * 60 // BPM  # frames
STEP = BEAT // tk.STEPS_PER_BEAT
A_MINOR = Key(9, True)
SHIPPED = Path(__file__).resolve().parents[1] / "exported_models" / "music-lm.json"


# --- the model and the answer mode, on ONNX Runtime -----------------------------------------------------------------

PHRASE = [Note(0, 2, 69), Note(2, 2, 72), Note(4, 2, 76), Note(6, 2, 74), Note(8, 2, 71), Note(10, 2, 68),
          Note(12, 1, 69)]


def test_the_controls_shape_what_the_model_draws() -> None:
    """Key lock keeps every note in the key, register within an octave of its centre, density changes how many
    notes start, a hold never follows silence, the first step of an answer is a note; a step costs well under a
    millisecond."""
    model = MusicModel(SHIPPED)
    rng = np.random.default_rng(3)
    prime = tk.encode(PHRASE, 16)
    starts = {}
    for density in (0.1, 0.9):
        controls = Controls(density=density, register=60)
        lines = []
        for _ in range(4):
            line = model.line(prime, 16, A_MINOR, rng)
            line.draw(4, controls, first_note=True)
            line.draw(60, controls)  # drawn on: the same line as in one go
            lines.append(np.array(line.tokens))
        for line in lines:
            assert line[0] >= tk.FIRST_PITCH
            assert not np.any((line[1:] == tk.HOLD) & (line[:-1] == tk.REST))
            notes = tk.decode(line, 16)
            assert all(n.pitch % 12 in A_MINOR.scale() for n in notes)
            assert all(abs(n.pitch - 60) <= REGISTER_SPAN for n in notes)
        starts[density] = sum(len(tk.decode(line)) for line in lines)
    assert starts[0.9] > 1.5 * starts[0.1], starts
    assert 0 < model.cost.per_step_ms < 1.0, model.cost


def test_an_answer_waits_for_the_phrase_to_end_and_never_copies_it() -> None:
    """No answer while a key is held; the first beat planned after the release starts one, in the phrase's key,
    with a note on that beat; playing again stops it. And what counts as a copy: the rhythm with the same intervals
    (transposed too), or with the same pitch classes."""
    answer = Answer(MusicModel(SHIPPED), seed=5)
    controls = Controls(call_bars=1, answer_bars=1, key_lock=True)
    held = Heard(tuple(PHRASE[:-1]), 12.5, True, 11.9, A_MINOR)
    assert answer.plan(held, 16, 4, controls) == []
    ended = Heard(tuple(PHRASE), 14.2, False, 13.0, tk.key_of(PHRASE))
    played = [n for start in range(16, 32, 4) for n in answer.plan(ended, start, 4, controls)]
    assert played and played[0].start == 16 and all(16 <= n.start < 32 for n in played)
    assert tk.in_key(played, A_MINOR) == 1.0 and not copies(played, PHRASE)
    again = Heard((*PHRASE, Note(33, 1, 60)), 33.5, True, 13.0, A_MINOR)
    assert answer.plan(again, 36, 4, controls) == []
    shifted = [n._replace(start=n.start + 40, pitch=n.pitch + 5) for n in PHRASE]
    assert copies(shifted, PHRASE) and copies(shifted[:2], PHRASE) is False
    assert copies([n._replace(pitch=n.pitch + 12) for n in PHRASE[:2]], PHRASE)
    assert not copies([n._replace(steps=n.steps + 1) for n in PHRASE], PHRASE)


# --- one show: call and response over JACK -------------------------------------------------------------------------

class Band:
    """The rest of the band (tests/jack_band.py, a process of its own): a keyboard and a MIDI clock into the show,
    ears on the show's audio and MIDI out, everything it sends scheduled by frame before it plays, what it hears kept
    with its frame. This side asks JACK the time and makes connections through a client of its own that runs no
    callback."""

    def __init__(self, name: str, seconds: float, folder: Path) -> None:
        self.name, self.seconds, self.result = name, seconds, folder / f"{name}.npz"
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("jack_band.py")), name,
                                         str(seconds), str(self.result)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline().strip() == "ready", "the band's JACK client did not start"
        self.client = jack.Client(f"{name}-ctl", no_start_server=True)
        self.keys, self.fromshow, self.ear = (f"{name}:{port}" for port in ("keys", "fromshow", "ear"))
        self.origin = 0
        self.schedule: list[tuple[int, bytes]] = []
        self.audio = np.zeros(0, np.float32)
        self.heard: list[tuple[int, bytes]] = []
        self.written: list[int] = []
        self.late = self.xruns = 0

    def connected(self, port: str) -> bool:
        return bool(self.client.get_all_connections(port))

    def play(self, origin: int, schedule: list[tuple[int, bytes]]) -> None:
        """Send `schedule` (frame, message), sorted; record the show's audio from frame `origin`."""
        self.origin, self.schedule = origin, sorted(schedule)
        plan = {"origin": origin, "schedule": [(frame, data.hex()) for frame, data in self.schedule]}
        self.process.stdin.write(json.dumps(plan) + "\n")
        self.process.stdin.flush()

    def close(self) -> None:
        """Stop the band and take in what it heard."""
        self.client.close()
        if self.process.poll() is None:
            self.process.stdin.write("stop\n")
            self.process.stdin.flush()
        self.process.wait(timeout=10)
        got = np.load(self.result)
        self.audio, self.written = got["audio"], got["written"].tolist()
        self.heard = [(int(row[0]), bytes(int(b) for b in row[1:])) for row in got["heard"]]
        self.late, self.xruns = int(got["late"]), int(got["xruns"])

    def written_at(self, frame: int) -> int:
        """The frame at which the scheduled event for `frame` really went out (its cycle's start when the band was
        late): what the show heard is what counts."""
        return self.written[[f for f, _ in self.schedule].index(frame)]


def phrase_events(start: int, notes: list[tuple[float, float, int]]) -> tuple[list[tuple[int, bytes]], int]:
    """Note on/off events of (beat, beats, pitch) notes, beat 0 at frame `start`; and the frame of the last
    release."""
    events = []
    for beat, beats, pitch in notes:
        on = start + round(beat * BEAT)
        events += [(on, bytes([0x90, pitch, 100])), (on + round(beats * BEAT) - 240, bytes([0x80, pitch, 0]))]
    return events, max(frame for frame, _ in events)


def onset_after(audio: np.ndarray, frame: int) -> int:
    """The first frame after `frame` where the sound rises above twice the loudest of the 10 ms before `frame`: a
    note starting over the decaying tail of the notes before (the synth releases over half a second); -1 if none."""
    tail = float(np.abs(audio[frame - RATE // 100:frame]).max())
    rising = np.flatnonzero(np.abs(audio[frame:]) > max(2 * tail, 1e-4))
    return frame + int(rising[0]) if len(rising) else -1


def offs_of(events: list[tuple[int, bytes]], pitch: int) -> list[int]:
    """The frames at which `pitch` was released."""
    return [f for f, d in events if d[0] & 0xF0 in (0x80, 0x90) and d[1] == pitch and (d[0] & 0xF0 == 0x80 or
                                                                                       d[2] == 0)]


def test_the_show_answers_a_jack_midi_phrase_on_the_beat_in_key(tmp_path: Path,
                                                               jack_server: str) -> None:  # noqa: F811
    """Two phrases in A minor into the show's MIDI input, the second released just after a beat (the longest wait
    for the next one). Each is answered: its first note on the first beat after the release, so within one beat
    (500 ms at 120 BPM); the synth's onset on the grid within one audio block; at least 90 % of the notes in A
    minor; not a copy; the audio's pitch track following the answer's pitches (MIDI out's notes); MIDI out on the
    grid too (its median)."""
    band = Band(unique("band"), 12.0, tmp_path)
    show = show_with(tmp_path, osc={"port": free_port()},
                     video={"width": 160, "height": 120, "fps": 10}, stages=[],
                     audio={"model": "synth-decoder.json"},
                     midi={"api": "jack", "inputs": [band.keys]},
                     tempo={"source": "midi", "bpm": BPM},
                     music={"mode": "answer", "model": str(SHIPPED), "output": "both",
                            "midi_out": band.fromshow, "call_bars": 1, "answer_bars": 1,
                            "density": 0.9, "register": 72},
                     params={"/synth/auto": False, "/synth/timbre/d": -1.0})
    live = LiveProcess(["run", str(show), "--source", "builtin", "--no-window", "--for", "60"],
                       env=headless_env())
    try:
        live.wait_for("Playing", timeout=30)
        ours = f"{band.name}:"
        outputs = [p.name for p in band.client.get_ports(is_audio=True, is_output=True)
                   if not p.name.startswith(("system:", ours))]
        assert outputs, "the show's synth has no JACK output port"
        band.client.connect(outputs[0], band.ear)
        assert wait_until(lambda: band.connected(band.fromshow) and band.connected(band.keys), timeout=5), \
            "the show connected neither its MIDI input nor its MIDI out to the test's ports"
        time.sleep(0.3)  # the connections take effect at JACK's next graph change
        start = band.client.frame_time + RATE // 2
        clock = [(start, b"\xfa")] + [(start + n * BEAT // 24, b"\xf8") for n in range(1, 24 * 22)]
        first, end_1 = phrase_events(start, [(4, 0.5, 69), (4.5, 0.5, 72), (5, 0.5, 76), (5.5, 0.5, 74),
                                             (6, 0.5, 71), (6.5, 0.5, 68), (7, 0.25, 69)])
        second, end_2 = phrase_events(start, [(12, 1, 76), (13, 0.5, 72), (13.5, 0.5, 71), (14, 1, 69),
                                              (15, 0.05 + 240 / BEAT, 68)])
        band.play(start - RATE // 2, clock + first + second)
        assert wait_until(lambda: band.client.frame_time > start + 20 * BEAT, timeout=15)
    finally:
        live.proc.send_signal(2)
        code, output = live.finish(timeout=20)
        band.close()
    assert code == 0 and "Traceback" not in output, output
    end_1, end_2 = band.written_at(end_1), band.written_at(end_2)  # the phrases' ends as the show heard them
    origin = band.origin
    audio = band.audio
    ons = [(f, d[1]) for f, d in band.heard if d[0] & 0xF0 == 0x90 and d[2] > 0]
    grid = lambda frame: (frame - start) / STEP  # noqa: E731  the grid step of a frame
    for end, until, phrase in ((end_1, start + 12 * BEAT, [69, 72, 76, 74, 71, 68, 69]),
                               (end_2, start + 20 * BEAT, [76, 72, 71, 69, 68])):
        answer = [(f, p) for f, p in ons if end < f < until]
        assert len(answer) >= 2, (answer, [line for line in output.splitlines() if "Music" in line or "MIDI" in line])
        next_beat = start + (int(grid(end)) // 4 + 1) * BEAT
        heard_at = onset_after(audio, end + RATE // 4 - origin)  # once the phrase's last note has faded
        assert heard_at >= 0, "no answer heard"
        heard_at += origin
        assert heard_at - end <= BEAT, f"answered {(heard_at - end) / RATE * 1000:.0f} ms after the phrase " \
            f"({[line for line in output.splitlines() if 'Music' in line]})"
        assert abs(heard_at - next_beat) <= BLOCK, \
            f"the answer sounds {heard_at - next_beat} frames off its beat (the JACK server missed {band.xruns} " \
            f"cycles, the test's client was late {band.late} times)"
        midi_errors = [abs(grid(f) - round(grid(f))) * STEP for f, _ in answer]  # sent at its time by a process
        assert np.median(midi_errors) <= BLOCK, f"MIDI out frames off the grid: {midi_errors}"
        pitches = [p for _, p in answer]
        assert sum(p % 12 in A_MINOR.scale() for p in pitches) >= 0.9 * len(pitches), pitches
        assert pitches[:len(phrase)] != phrase[:len(pitches)] and \
            np.diff(pitches[:len(phrase)]).tolist() != np.diff(phrase[:len(pitches)]).tolist()
        tracked = []
        estimator = Pitch(RATE, 2048, fmin=100)
        for (frame, pitch), (next_frame, _) in zip(answer, [*answer[1:], (until, 0)]):
            # late in the note: the notes before it (released over half a second) have faded by then
            last = min(next_frame, min((f for f in offs_of(band.heard, pitch) if f > frame), default=next_frame))
            window = audio[max(frame, last - RATE // 100 - 2048) - origin:last - RATE // 100 - origin]
            if len(window) < 2048:
                continue
            hz, _ = estimator.estimate(window)
            tracked.append((pitch, 69 + 12 * np.log2(hz / 440) if hz > 0 else 0.0))
        assert tracked and sum(abs(p - m) < 0.5 for p, m in tracked) >= 0.8 * len(tracked), tracked
    summary = re.search(r"Music: (\d+) notes, answers (\d+) ms after the phrase \(worst (\d+) ms\), (\d+) model steps "
                        r"at ([\d.]+) ms a step", output)
    assert summary, output
    assert int(summary[3]) <= 500 and int(summary[4]) >= 2 * 15, summary[0]


def test_the_player_accompanies_then_morphs_and_stores_a_melody(music_vae: tuple[Path, Path]) -> None:  # noqa: F811
    """The [music] part in-process with the show's clock at 240 BPM: accompany puts chords of the key played under
    a C major phrase, each note dated exactly on the grid; /music/mode switches to morph, whose loop plays, and
    /music/store_a makes the phrase melody A."""
    from live.audio.engine import MUSIC_NOTE, NOTE, AudioEngine
    from live.control.tempo import Clock
    from live.music.player import MusicPlayer, MusicSection
    from live.params import ParamTree

    encoder, decoder = music_vae
    section = MusicSection(mode="accompany", encoder=str(encoder), decoder=str(decoder))
    params, events = MusicPlayer.params(section)
    synth_params, synth_events = AudioEngine.params()
    tree = ParamTree([*params, *synth_params], [*events, *synth_events])
    clock, said = Clock(bpm=240), []
    player = MusicPlayer(section, tree, clock, Path, event_delay=0.0, say=said.append)
    played = tree.listen(MUSIC_NOTE, timed=True)

    def onsets() -> list[tuple[int, float]]:
        got = []
        while played:
            _, (pitch, velocity), at = played.popleft()
            if velocity > 0:
                got.append((pitch, at))
        return got

    print(player.open())
    chords: list[tuple[int, float]] = []
    looped: list[tuple[int, float]] = []
    try:
        for pitch in (60, 64, 67, 72, 67, 64):  # C major, over a bar and a half
            tree.emit(NOTE, pitch, 0.8)
            time.sleep(0.12)
            tree.emit(NOTE, pitch, 0.0)
        wait_until(lambda: chords.extend(onsets()) or len(chords) >= 4, timeout=5)
        tree.set("/music/mode", "morph")
        time.sleep(0.3)
        onsets()  # what accompany planned before the switch
        tree.emit("/music/store_a")
        wait_until(lambda: looped.extend(onsets()) or len(looped) >= 4, timeout=5)
    finally:
        player.close()
    print(said, chords, looped)
    assert chords and all(pitch % 12 in {0, 2, 4, 5, 7, 9, 11} for pitch, _ in chords), chords
    assert all(abs(s - round(s)) < 1e-6 for s in (clock.beat_at(at) * tk.STEPS_PER_BEAT for _, at in chords))
    assert "Music: melody A stored for morph (two bars)" in said, said
    assert looped and all(abs(s - round(s)) < 1e-6
                          for s in (clock.beat_at(at) * tk.STEPS_PER_BEAT for _, at in looped)), looped


def test_a_release_just_before_a_beat_is_answered_on_that_beat() -> None:
    """The beat is planned while a key is still held (no answer yet); the key comes up 20 ms before the beat, later
    than the beat's plan: the music thread, woken by the release, plans the beat again and the answer still starts
    on it, within one beat of the phrase's end. (Up to three tries: a loaded machine may wake the test itself late.)"""
    from live.audio.engine import MUSIC_NOTE, NOTE, AudioEngine
    from live.control.tempo import Clock
    from live.music.player import MusicPlayer, MusicSection
    from live.params import ParamTree

    section = MusicSection(mode="answer", model=str(SHIPPED), call_bars=1, answer_bars=1, density=0.6)
    params, events = MusicPlayer.params(section)
    synth_params, synth_events = AudioEngine.params()
    beat_s, delay = 60.0 / BPM, 0.006

    def sleep_until(t: float) -> None:
        time.sleep(max(t - time.perf_counter(), 0.0))

    for _ in range(3):
        tree = ParamTree([*params, *synth_params], [*events, *synth_events])
        clock, said = Clock(bpm=BPM), []
        player = MusicPlayer(section, tree, clock, Path, event_delay=delay, say=said.append)
        played = tree.listen(MUSIC_NOTE, timed=True)
        player.open()
        try:
            first = clock.next_boundary(time.perf_counter(), 1.0)
            pitches = (69, 72, 76, 74, 71)  # legato eighths in A minor: a key is down throughout
            for i, pitch in enumerate(pitches):
                sleep_until(first + i * beat_s / 2)
                tree.emit(NOTE, pitch, 0.8)
                if i:
                    tree.emit(NOTE, pitches[i - 1], 0.0)
            beat = first + 3 * beat_s  # the last note is held over a beat, and released just before the next
            sleep_until(beat - 0.02)
            released = time.perf_counter()
            tree.emit(NOTE, pitches[-1], 0.0)
            sleep_until(beat + beat_s)
        finally:
            player.close()
        if beat - released > 0.012:
            break
    onsets = sorted(at + delay for _, (_, velocity), at in played if velocity > 0)
    print(f"released {1000 * (beat - released):.1f} ms before the beat; answer at "
          f"{[round(1000 * (t - beat), 2) for t in onsets[:4]]} ms from it; {said}")
    assert beat - released > 0.012, "three tries, and the test's own release came too late each time"
    assert onsets and abs(onsets[0] - beat) < 1e-6, (onsets[:3], beat)
    assert onsets[0] - released <= beat_s


def test_midi_out_sends_on_time_from_its_own_process_and_releases_what_sounds_at_close(
        tmp_path: Path, jack_server: str) -> None:  # noqa: F811
    """MIDI out's child process connects to the port named, sends a note at its time (within a period and a
    margin: JACK passes a message on at the next cycle), releases the note still sounding when the show closes it,
    and says in one line, with the fix, when no port has the name given."""
    from live.control.midi import API
    from live.music.midi_out import MidiOut

    band = Band(unique("ears"), 2.0, tmp_path)
    said: list[str] = []
    out = MidiOut(API["jack"], band.fromshow, 3, said.append)
    try:
        assert out.open().startswith(f"Music MIDI out: {band.fromshow}, channel 3")
        wait_until(lambda: band.connected(band.fromshow), timeout=5)
        time.sleep(0.3)  # the connection takes effect at JACK's next graph change
        now, frame = time.perf_counter(), band.client.frame_time
        out.note(now + 0.2, now + 30.0, 64, 0.5)
        time.sleep(0.5)
    finally:
        out.close()
    time.sleep(0.1)
    band.close()
    (on_frame, on), (_, off) = band.heard[:2]
    assert on == bytes([0x92, 64, 64]) and off == bytes([0x92, 64, 0]), band.heard
    assert abs(on_frame - (frame + 0.2 * RATE)) <= 2 * BLOCK + RATE // 200, on_frame - frame  # frame_time: ±1 period
    assert out.stats()["sent"] == 1 and not said, (out.stats(), said)
    missing = MidiOut(API["jack"], "no-such-instrument", 1).open()
    assert "no output port starting with 'no-such-instrument'" in missing and "fix:" in missing, missing
