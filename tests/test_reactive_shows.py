"""The shipped shows that listen and watch, played as a user plays them (`live run` in a subprocess, recording):
the vj show with a music file as its audio input pulses on the beat in its recording, and does not without the
music; the gallery show's sound follows the motion in front of its camera."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import soundfile as sf
import tomli_w

from fixtures_live import audio_of, decode_frames, run_live
from live.show import DEFAULT_SHOW

SHOWS = DEFAULT_SHOW.parent
RATE = 48000
BPM = 120.0


def shipped_copy(name: str, folder: Path, **changes: dict) -> Path:
    """A shipped show copied into `folder` with its model paths made absolute and some tables changed, with nothing
    that opens a port (OSC, OSCQuery, MIDI) so tests can run side by side."""
    data = tomllib.loads((SHOWS / name).read_text())
    watch = data.get("watch", {})
    for table, key in ((data["video"], "model"), (data["audio"], "model"), (watch, "face_model"),
                       (watch, "mask_model"), *((stage, "model") for stage in data.get("stages", []))):
        if table.get(key):
            table[key] = str((SHOWS / table[key]).resolve())
    data["osc"] = {"enabled": False}
    data["oscquery"] = {"enabled": False}
    data["midi"] = {"enabled": False}
    data["outputs"] = []
    for section, values in changes.items():
        data.setdefault(section, {}).update(values)
    path = folder / name
    path.write_text(tomli_w.dumps(data))
    return path


def kicks(seconds: float, level: float) -> np.ndarray:
    """A four-on-the-floor kick at BPM: a 150 ms sine falling from 120 to 50 Hz on each beat, plus a soft
    off-beat hat, `level` its peak."""
    t = np.arange(int(seconds * RATE)) / RATE
    out = np.zeros_like(t)
    beat = 60.0 / BPM
    n = int(0.15 * RATE)
    tk = np.arange(n) / RATE
    kick = np.sin(2 * np.pi * np.cumsum(50 + 70 * np.exp(-tk / 0.03)) / RATE) * np.exp(-tk / 0.05)
    hat = np.random.default_rng(1).standard_normal(int(0.03 * RATE)) * np.exp(-np.arange(int(0.03 * RATE)) / 300)
    for k in range(int(seconds / beat)):
        start = int(k * beat * RATE)
        out[start:start + n] += kick[:len(out) - start]
        off = start + int(beat / 2 * RATE)
        out[off:off + len(hat)] += 0.15 * hat[:max(len(out) - off, 0)]
    return (level * out / max(np.abs(out).max(), 1e-9)).astype(np.float32)


def beat_prominence(frames: list[tuple[float, np.ndarray]], hz: float) -> float:
    """How much the picture's change from frame to frame pulses at `hz`: its spectrum's amplitude there (frames are
    unevenly spaced, so a direct Fourier sum at each frequency) over the median amplitude from 0.3 to 6 Hz."""
    times = np.array([t for t, _ in frames[1:]])
    change = np.array([np.abs(b.astype(np.int16) - a.astype(np.int16)).mean()
                       for (_, a), (_, b) in zip(frames, frames[1:])])
    change -= change.mean()
    freqs = np.arange(0.3, 6.0, 0.05)
    amplitude = np.abs(np.exp(-2j * np.pi * np.outer(freqs, times)) @ change)
    return float(amplitude[np.argmin(np.abs(freqs - hz))] / np.median(amplitude))


def test_the_vj_show_pulses_on_the_beat_of_its_music_and_not_without_it(tmp_path):
    pulse = {}
    for name, level in (("music", 0.8), ("silence", 0.0)):
        folder = tmp_path / name
        folder.mkdir()
        sf.write(folder / "music.wav", kicks(14.0, level), RATE)
        show = shipped_copy("vj.toml", folder, audio_in={"source": "music.wav", "channels": 1},
                            audio={"enabled": False})
        out = folder / "out.mp4"
        result = run_live(["run", str(show), "--source", "builtin", "--for", "12", "--no-window", "--record",
                           str(out)], timeout=180)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Audio in: music.wav" in result.stdout
        frames = decode_frames(out)
        assert len(frames) > 60, f"{len(frames)} frames"
        pulse[name] = beat_prominence(frames[15:], BPM / 60.0)  # after the first second: the analysis warms up
    assert pulse["music"] > 2.5 and pulse["silence"] < 2.0, pulse  # measured here: 3.9 and 0.9
