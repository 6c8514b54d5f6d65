"""The shipped shows that listen and watch, played as a user plays them (`live run` in a subprocess, recording):
the vj show with a music file as its audio input pulses on the beat in its recording, and does not without the
music; the gallery show's sound follows the motion in front of its camera."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import soundfile as sf
import tomli_w

from fixtures_live import audio_of, decode_frames, headless_env, run_live
from live.show import DEFAULT_SHOW

SHOWS = DEFAULT_SHOW.parent
RATE = 48000
BPM = 135.0  # 2.25 Hz: off the 1 Hz keyframes' harmonics (a recording's keyframe differs from the frame before)


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
    assert pulse["music"] > 2.5 and pulse["silence"] < 2.0, pulse


def room_clip(path: Path, seconds: float = 18.0, fps: float = 15.0) -> tuple[float, float]:
    """A still room (a grey wall with some texture), then a bright block walking across it, then the still room
    again; returns when the walk starts and ends, in seconds."""
    import cv2

    rng = np.random.default_rng(3)
    wall = cv2.GaussianBlur(rng.integers(90, 150, (240, 320, 3), dtype=np.uint8), (9, 9), 0)
    start, end = 6.0, 10.0
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (320, 240))
    for i in range(int(seconds * fps)):
        t = i / fps
        frame = wall.copy()
        if start <= t < end:
            x = int((t - start) / (end - start) * 260)
            y = int(90 + 60 * np.sin(t * 3))
            cv2.rectangle(frame, (x, y - 50), (x + 60, y + 50), (40, 60, 230), -1)
        writer.write(frame)
    writer.release()
    return start, end


def test_the_gallery_shows_sound_follows_the_motion_in_front_of_its_camera(tmp_path):
    start, end = room_clip(tmp_path / "room.mp4")
    # its attract scenes would change the whole picture, where the walk is found from the frames that change
    show = shipped_copy("gallery.toml", tmp_path, attract={"enabled": False})
    out = tmp_path / "out.mp4"
    result = run_live(["run", str(show), "--source", str(tmp_path / "room.mp4"), "--for", "14", "--no-window",
                       "--record", str(out)], timeout=180,
                      env=headless_env(LIVE_FAKE_START="2026-12-08T12:00:00"))  # a Tuesday noon: open
    assert result.returncode == 0, result.stdout + result.stderr
    sound = audio_of(out).reshape(-1, 2).mean(axis=1)
    assert len(sound) > 12 * RATE
    # The clip starts playing while the show opens, before the recording: when the walk is in the recording is
    # read from the recording's own pictures (the frames that change)
    frames = decode_frames(out)
    times = np.array([t for t, _ in frames[1:]])
    change = np.array([np.abs(b.astype(np.int16) - a.astype(np.int16)).mean()
                       for (_, a), (_, b) in zip(frames, frames[1:])])
    walking = times[change > 4 * np.median(change) + 0.5]
    assert len(walking) > 10 and walking[-1] - walking[0] > 0.8 * (end - start) - 0.5, walking
    walk_from, walk_to = walking[0], walking[-1]
    assert walk_from > 2.0, f"the walk starts {walk_from:.1f} s into the recording: no still room before it"

    def rms(a: float, b: float) -> float:
        return float(np.sqrt(np.mean(sound[int(a * RATE):int(b * RATE)] ** 2)))

    still, moving = rms(0.5, walk_from), rms(walk_from + 1.0, walk_to)
    assert moving > 1.8 * still, f"RMS still {still:.4f}, moving {moving:.4f}"  # measured here: 0.013 and 0.039
