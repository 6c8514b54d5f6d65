"""The recording sink: the show's picture and sound into a fragmented MP4 that stays playable whatever happens.

A plain MP4 keeps its index (the moov atom) until the file is closed, so a crash, SIGKILL, a closed terminal or a full
disk leaves nothing playable. Here the index comes first and the media follows in self-contained fragments, one per
keyframe (about one a second), so a file cut off anywhere plays up to its last complete fragment. A write that fails
(disk full, I/O error) stops this recording with a LiveError naming the file; the player closes it and plays on.
"""

from __future__ import annotations

import errno
import os
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np
from pydantic import Field

from live.errors import LiveError
from live.parts import KindSection

if TYPE_CHECKING:
    from live.show import Show

#: Index first, then a fragment at every keyframe, each addressed from its own start: a cut-off file plays.
MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"
#: Each fragment goes to the file as soon as it is complete, so the file's size after a write is a fragment's end.
CONTAINER_OPTIONS = {"movflags": MOVFLAGS, "flush_packets": "1"}
KEYFRAME_SECONDS = 1.0  # the most a crash can lose: the fragment being written
SILENCE_CHUNK = 48000  # frames of silence encoded at a time when a gap in the audio is filled
FAILURES = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EIO: "I/O error",
            errno.EROFS: "read-only file system", errno.EACCES: "permission denied", errno.EPERM: "permission denied",
            errno.EFBIG: "file too large for the file system"}
FIXES = {errno.ENOSPC: "free space on that disk, or record to another one with --record",
         errno.EDQUOT: "free space within your quota, or record to another disk with --record",
         errno.EIO: "check the disk (dmesg), or record to another one with --record",
         errno.EFBIG: "record to a file system that takes large files (not FAT32), or record shorter shows"}


class RecordSection(KindSection):
    """`[[outputs]] kind = "record"`: an .mp4 (H.264 + AAC with the synth's sound), relative to the show file."""

    path: str = Field(description="the .mp4 to write, relative to the show file")


class Recorder:
    """H.264 + AAC into a fragmented .mp4, a part with the show's lifecycle (live/parts.py).

    Video is stamped by wall-clock time (ms) and audio by its position in the audio tap's timeline, so they stay in
    sync when frames are dropped and when the tap had to drop sound the output loop was too late to read: such a
    gap becomes silence at its place instead of pulling the rest of the sound early.
    """

    def __init__(self, path: Path, width: int, height: int, fps: float, samplerate: int | None) -> None:
        self.path, self.width, self.height, self.fps, self.samplerate = Path(path), width, height, fps, samplerate
        self._container: Any = None  # av's OutputContainer once open
        self._video: Any = None
        self._audio: Any = None
        self._start: float | None = None  # perf_counter() time of the first frame: video time 0
        self._last_ms = -1
        self._audio_origin: int | None = None  # tap position of the first sample recorded: audio time 0
        self._audio_frames = 0  # samples written, silence for gaps included
        self._complete = 0  # bytes of the file that are whole fragments: where a failed write is cut back to
        self.frames = 0
        self.failed = ""  # why the recording stopped early ("disk full"), "" while it is fine

    @classmethod
    def from_show(cls, section: RecordSection, show: Show) -> Recorder:
        rate = show.audio.samplerate if show.audio.enabled else None
        return cls(show.resolve(section.path), show.video.width, show.video.height, show.video.fps, rate)

    def open(self) -> str:
        """Create the folder and the file and write the MP4 header; LiveError naming the path and the fix if it
        cannot, so a show fails before it plays, not minutes into it."""
        if self._container is not None:
            return f"Output: recording to {self.path}"
        path = self.path
        if path.suffix.lower() != ".mp4":
            raise LiveError(f"cannot record to {path}: a recording is an MP4 file", "give a path ending in .mp4")
        if path.is_dir():
            raise LiveError(f"cannot record to {path}: it is a directory",
                            f"give a file name, e.g. {path / 'show.mp4'}")
        nearest = next((folder for folder in path.parents if folder.exists()), None)
        if nearest is not None and not nearest.is_dir():  # mkdir would only say "File exists"
            raise LiveError(f"cannot record to {path}: {nearest} is a file, not a folder",
                            "choose a path inside a folder for --record (or an [[outputs]] record path)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            container = av.open(str(path), "w", format="mp4", container_options=CONTAINER_OPTIONS)
        except (OSError, av.FFmpegError) as err:
            raise self._cannot(err) from None
        try:
            video = container.add_stream("libx264", rate=max(1, round(self.fps)))
            video.width, video.height, video.pix_fmt = self.width, self.height, "yuv420p"
            video.codec_context.gop_size = max(1, round(self.fps * KEYFRAME_SECONDS))  # a fragment a second
            video.options = {"preset": "ultrafast", "tune": "zerolatency"}
            video.codec_context.time_base = Fraction(1, 1000)
            audio = None
            if self.samplerate:
                audio = container.add_stream("aac", rate=self.samplerate)
                audio.layout = "stereo"
            container.start_encoding()  # the header now: a disk that is full or read-only says so before "Playing"
        except (OSError, av.FFmpegError) as err:
            _close_quietly(container)
            raise self._cannot(err) from None
        self._container, self._video, self._audio = container, video, audio
        return f"Output: recording to {path}"

    def write(self, image: np.ndarray, t: float) -> None:
        """Add a BGR frame shown at perf_counter() time `t`; LiveError naming the file if it cannot be written."""
        if self._container is None or self.failed:
            return
        if self._start is None:
            self._start = t
        ms = max(int((t - self._start) * 1000), self._last_ms + 1)  # two frames in one ms: keep pts increasing
        self._last_ms = ms
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, frame.time_base = ms, Fraction(1, 1000)
        self._mux(self._video, frame)
        self.frames += 1

    def write_audio(self, samples: np.ndarray, position: int) -> None:
        """Add (frames, 2) float32 samples whose first one is at `position` in the tap's timeline (AudioEngine's
        read_tap); samples skipped since the last call (the tap dropped them) are recorded as silence."""
        if self._audio is None or self._container is None or self.failed or not len(samples):
            return
        if self._audio_origin is None:
            self._audio_origin = position
        gap = position - self._audio_origin - self._audio_frames
        if gap < 0:  # overlaps what is already recorded: keep only the new part
            samples = samples[-gap:]
        while gap > 0:
            silence = min(gap, SILENCE_CHUNK)
            self._write_samples(np.zeros((silence, 2), np.float32))
            gap -= silence
        if len(samples):
            self._write_samples(samples)

    def _write_samples(self, samples: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.T, np.float32), format="fltp",
                                           layout="stereo")
        frame.sample_rate, frame.pts = self.samplerate, self._audio_frames
        self._audio_frames += len(samples)
        self._mux(self._audio, frame)

    def _mux(self, stream: Any, frame: Any) -> None:
        """Encode and write; a failure marks the recording stopped and raises LiveError naming the file."""
        try:
            self._container.mux(stream.encode(frame))
            self._complete = os.stat(self.path).st_size
        except (OSError, av.FFmpegError) as err:
            self.failed, fix = _describe(err, "check the disk, or record to another one with --record")
            self._cut_back()
            raise LiveError(f"recording to {self.path} stopped: {self.failed}", fix) from None

    def _cut_back(self) -> None:
        """Drop the fragment a failed write left half-written: the file then ends on a whole one, so players (and
        PyAV) read it to the end without a decoding error, and a full disk gets that space back."""
        try:
            os.truncate(self.path, self._complete)
        except OSError:
            pass  # the disk is gone: what is there stays

    def _cannot(self, err: Exception) -> LiveError:
        why, fix = _describe(err, "choose a writable folder for --record (or an [[outputs]] record path)")
        return LiveError(f"cannot record to {self.path}: {why}", fix)

    def close(self) -> None:
        """Flush the encoders and finish the file; after a failed write just release it. Never raises, safe twice."""
        container, self._container = self._container, None
        if container is None:
            return
        try:
            if not self.failed:
                for stream in (self._video, self._audio):
                    if stream is not None:
                        container.mux(stream.encode())
            container.close()  # the last fragment and the trailer
        except (OSError, av.FFmpegError) as err:
            self.failed = self.failed or _describe(err, "")[0]
            _close_quietly(container)
        if self.failed:  # whatever was written after the last whole fragment goes
            self._cut_back()

    def stats(self) -> dict[str, Any]:
        """Frames, seconds of video and bytes on disk so far, and why it stopped ("" while it records)."""
        try:
            size = os.stat(self.path).st_size
        except OSError:
            size = 0
        return {"frames": self.frames, "seconds": round(max(self._last_ms, 0) / 1000, 3), "bytes": size,
                "failed": self.failed}

    def status(self) -> str:
        """One line for the HUD and the summary."""
        if self.failed:
            return f"recording to {self.path} stopped: {self.failed}"
        return f"recording to {self.path}, {max(self._last_ms, 0) / 1000:.1f} s"


def _describe(err: Exception, fix: str) -> tuple[str, str]:
    """What an I/O failure means, in words, and its fix (`fix` when there is none particular to it)."""
    code = getattr(err, "errno", None)
    return FAILURES.get(code) or getattr(err, "strerror", None) or str(err), FIXES.get(code, fix)


def _close_quietly(container: Any) -> None:
    """Release a container whose disk may be full or gone; its file is cut back or given up by the caller."""
    try:
        container.close()
    except (OSError, av.FFmpegError):
        pass
