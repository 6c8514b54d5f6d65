"""Recordings survive what goes wrong in a show: a disk that fills up, a path that cannot be written, the terminal
closed (SIGHUP), the process killed, and an output loop that stalled longer than the audio tap holds."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from fixtures_live import LiveProcess, audio_of, decode_frames, free_port, run_live, scene, show_with
from live.errors import LiveError
from live.audio.engine import TAP_GAP_BLOCKS, TAP_SECONDS, Tap
from live.video.record import Recorder

RATE, BLOCK = 48000, 128


@contextmanager
def tmpfs(where: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at `where` for the test's span; skips when this machine does not let the test mount one."""
    where.mkdir(exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): run the tests as root for this check")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def recording_show(tmp_path: Path) -> Path:
    return show_with(tmp_path, osc={"port": free_port()})


def seconds_of_video(path: Path) -> float:
    frames = decode_frames(path)
    return frames[-1][0] if frames else 0.0


def test_a_full_disk_ends_the_recording_not_the_show(tmp_path: Path, camera_file: Path) -> None:
    """A 450 KB disk fills in about two seconds of an eight-second show (a loaded machine, playing fewer frames, still
    fills it well before the end; a whole first fragment still fits): the show plays to its end, says once which
    recording stopped and why, and what reached the disk plays back."""
    with tmpfs(tmp_path / "disk", "size=450k") as disk:
        out = disk / "out.mp4"
        result = run_live(["run", str(recording_show(tmp_path)), "--source", str(camera_file), "--for", "8",
                           "--no-window", "--record", str(out)], timeout=60)
        said = result.stdout + result.stderr
        assert result.returncode == 0, said
        assert "Traceback" not in said and "unexpected error" not in said
        assert result.stdout.strip().splitlines()[-1].startswith("Played 8.")  # the show played to the end
        stopped = [line for line in said.splitlines() if "disk full" in line]
        assert len(stopped) == 1 and str(out) in stopped[0], said
        video, sound = seconds_of_video(out), len(audio_of(out)) / 2 / RATE  # the file is cut back to whole fragments
        print(f"full disk: {out.stat().st_size} bytes on a 450 KB disk, {video:.2f} s video, {sound:.2f} s audio")
        assert video >= 0.5 and sound >= 0.5


@pytest.mark.parametrize("case", ["under a file", "a directory", "read-only disk"])
def test_an_unwritable_path_fails_before_playing(tmp_path: Path, case: str) -> None:
    """The show does not start, and says which path and how to fix it, in one message without a traceback."""
    def run(out: Path) -> tuple[int, str, str]:
        result = run_live(["run", str(recording_show(tmp_path)), "--source", "builtin", "--for", "3", "--no-window",
                           "--record", str(out)], timeout=60)
        return result.returncode, result.stdout, result.stderr

    if case == "under a file":
        (tmp_path / "notes.txt").write_text("a file, not a folder")
        out = tmp_path / "notes.txt" / "out.mp4"
        code, stdout, stderr = run(out)
    elif case == "a directory":
        out = tmp_path / "take.mp4"
        out.mkdir()
        code, stdout, stderr = run(out)
    else:
        with tmpfs(tmp_path / "ro", "ro,size=64k") as disk:
            out = disk / "out.mp4"
            code, stdout, stderr = run(out)
        assert "read-only file system" in stderr
    assert code != 0 and "Playing" not in stdout, stdout + stderr
    assert f"cannot record to {out}" in stderr and "fix:" in stderr, stderr
    assert "Traceback" not in stdout + stderr and "unexpected error" not in stderr


def started_recording(tmp_path: Path, camera_file: Path) -> tuple[LiveProcess, Path, float]:
    """An unbounded show recording with sound; returns once it plays, with the time it said so."""
    out = tmp_path / "out.mp4"
    live = LiveProcess(["run", str(recording_show(tmp_path)), "--source", str(camera_file), "--no-window",
                        "--record", str(out)])
    live.wait_for("Playing")
    return live, out, time.monotonic()


def test_sighup_ends_the_show_cleanly_and_the_recording_plays(tmp_path: Path, camera_file: Path) -> None:
    live, out, playing = started_recording(tmp_path, camera_file)
    time.sleep(2.5)
    live.proc.send_signal(signal.SIGHUP)
    hung_up = time.monotonic()
    code, said = live.finish(timeout=10)
    assert code == 0 and time.monotonic() - hung_up < 5, said
    assert "Played " in said and "Traceback" not in said
    video, sound = seconds_of_video(out), len(audio_of(out)) / 2 / RATE
    print(f"SIGHUP after {hung_up - playing:.2f} s: {video:.2f} s video, {sound:.2f} s audio")
    assert video >= 1.5 and sound >= 1.5


def test_sigkill_leaves_a_recording_that_plays_to_the_last_fragment(tmp_path: Path, camera_file: Path) -> None:
    live, out, playing = started_recording(tmp_path, camera_file)
    time.sleep(4.5)
    live.proc.kill()
    played = time.monotonic() - playing
    live.proc.wait(timeout=10)
    video, sound = seconds_of_video(out), len(audio_of(out)) / 2 / RATE
    print(f"SIGKILL after {played:.2f} s: {video:.2f} s video, {sound:.2f} s audio")
    assert video >= played - 2.0 and sound >= played - 2.0


def tone(start: int, frames: int, level: float) -> np.ndarray:
    """A 440 Hz stereo tone from absolute frame `start`: the same wave whoever cuts it into blocks."""
    wave = level * np.sin(2 * np.pi * 440 * np.arange(start, start + frames) / RATE)
    return np.repeat(wave[:, None], 2, axis=1).astype(np.float32)


def onset_after(sound: np.ndarray, after_s: float, level: float = 0.1) -> float:
    """When (s) the first sample louder than `level` sounds, searching from `after_s`."""
    mono = np.abs(sound.reshape(-1, 2)[:, 0])
    start = int(after_s * RATE)
    return (start + int(np.flatnonzero(mono[start:] > level)[0])) / RATE


def test_audio_keeps_its_place_after_an_output_stall_longer_than_the_tap(tmp_path: Path) -> None:
    """The synth plays on while the output loop stalls 3 s (longer than the tap's 2 s): the tap drops the oldest
    second, says where what it returns starts, and the recording has that second as silence; a burst played
    3.0 s in is heard 3.0 s in, and the sound is as long as the show, not a second short (as it was)."""
    tap = Tap(int(TAP_SECONDS * RATE), RATE, TAP_GAP_BLOCKS * BLOCK)
    recorder = Recorder(tmp_path / "stall.mp4", 320, 240, 30, RATE)
    recorder.open()
    image = scene(320, 240)
    written = 0

    def play_until(seconds: float, burst: tuple[float, float] | None = None) -> None:
        """The synth thread: blocks stamped with the time they play (t = 0 is the first); a tone, a burst, or
        silence while the output loop is away."""
        nonlocal written
        while written < seconds * RATE:
            if burst is None:
                block = tone(written, BLOCK, 0.05)
            else:
                loud = burst[0] * RATE <= written < burst[1] * RATE
                block = tone(written, BLOCK, 0.5) if loud else np.zeros((BLOCK, 2), np.float32)
            tap.write(block, 100.0 + written / RATE)
            written += BLOCK

    def output_loop(until: float) -> None:
        """The output loop at 30 fps: a frame at each time, then what the tap has, as player.show_frame does."""
        now = written / RATE
        while now < until:
            play_until(now + 1 / 30)
            now = written / RATE
            recorder.write(image, 100.0 + now)
            position, samples = tap.read()
            recorder.write_audio(samples, position)

    output_loop(1.0)
    play_until(4.0, burst=(3.0, 3.5))  # the output loop stalls: nothing read from 1 s to 4 s
    position, samples = tap.read()
    assert position == 2 * RATE and len(samples) == 2 * RATE and tap.dropped > 0.9 * RATE  # the newest 2 s
    recorder.write_audio(samples, position)
    output_loop(5.0)
    recorder.close()

    sound = audio_of(tmp_path / "stall.mp4")
    seconds = len(sound) / 2 / RATE
    assert abs(seconds - written / RATE) < 0.05  # a couple of AAC frames; losing the second would be 1.0
    assert abs(onset_after(sound, 1.5) - 3.0) < 0.03  # pulled early it would sound at 2.0 s
    assert seconds_of_video(tmp_path / "stall.mp4") == pytest.approx(5.0, abs=0.1)


def test_a_gap_longer_than_the_tap_keeps_positions_in_time() -> None:
    """The device ran dry for 5 s (more than the tap holds): the next block is still placed at 5 s."""
    tap = Tap(int(TAP_SECONDS * RATE), RATE, TAP_GAP_BLOCKS * BLOCK)
    block = np.ones((BLOCK, 2), np.float32)
    tap.write(block, 0.0)
    assert tap.read()[0] == 0
    tap.write(block, 5.0)
    position, samples = tap.read()
    assert position + len(samples) - BLOCK == 5 * RATE
    assert (samples[-BLOCK:] == 1).all() and not samples[:-BLOCK].any()


def test_a_recorder_that_failed_closes_quietly_and_says_why(tmp_path: Path) -> None:
    """After a failed write close() neither raises nor hangs, twice; stats and status say why it stopped."""
    with tmpfs(tmp_path / "disk", "size=64k") as disk:
        recorder = Recorder(disk / "out.mp4", 320, 240, 30, None)
        assert recorder.open() == f"Output: recording to {disk / 'out.mp4'}"
        noise = np.random.default_rng(0).integers(0, 255, (240, 320, 3), np.uint8)  # barely compresses
        with pytest.raises(LiveError) as failure:
            for i in range(300):
                recorder.write(noise, i / 30)
        started = time.monotonic()
        recorder.close()
        recorder.close()
        assert time.monotonic() - started < 1.0
    assert f"recording to {disk / 'out.mp4'} stopped: disk full" in str(failure.value)
    assert recorder.stats()["failed"] == "disk full" and recorder.status().endswith("stopped: disk full")
    assert 0 < recorder.stats()["frames"] < 300


def test_av_reads_a_recording_that_was_never_closed(tmp_path: Path) -> None:
    """The fragmented layout on its own: frames written but the file never finished (as after a crash) decode."""
    path = tmp_path / "open.mp4"
    recorder = Recorder(path, 320, 240, 30, None)
    recorder.open()
    image = scene(320, 240)
    for i in range(75):  # 2.5 s: two whole fragments on disk, the third still in memory
        recorder.write(image, i / 30)
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(path.read_bytes())  # what a crash would leave
    recorder.close()
    assert 1.9 <= seconds_of_video(copy) < 2.5
    assert os.path.getsize(copy) < os.path.getsize(path)
