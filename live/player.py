"""Plays a show: builds the parameter tree and the stages from the show file, wires them with mailboxes, and runs
the output loop on the main thread (where GUI toolkits want it) until the show ends.

The frame path, camera to projector:
    capture.py (capture thread) -> Mailbox -> chain.py (inference thread: stylize.py, ...) -> Mailbox
    -> output.py (this loop)
The sound path runs beside it and never waits on video: audio/engine.py (synth thread) -> ring -> C callback.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from live.audio.engine import AudioEngine
from live.control.midi import MidiControl
from live.control.osc import OscServer
from live.control.oscquery import OscQueryServer
from live.control.surface import ControlSurface
from live.errors import LiveError
from live.mailbox import Mailbox
from live.show import Show, load_show
from live.video.capture import Capture
from live.video import hud
from live.video.frame import Frame
from live.video.output import WindowOutput, has_display
from live.video.record import Recorder
from live.video.chain import Blackout, ChainThread
from live.video.latent import LatentLayer
from live.video.stylize import Stylizer

RELOAD_CHECK_S = 0.5  # how often the show file's modification time is looked at
TRANSPORTS = ("osc", "oscquery", "midi")  # opened in this order (OSCQuery announces the OSC port)


def percentile(values, q: float) -> float:
    return float(np.percentile(np.fromiter(values, float), q)) if values else 0.0


@dataclass
class Summary:
    seconds: float
    frames: int
    dropped: int
    latency_ms: dict[str, float]
    underruns: int | None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        audio = "no audio device" if self.underruns is None else f"{self.underruns} audio underruns"
        return (f"Played {self.seconds:.1f} s: {self.frames} frames, {self.fps:.1f} fps, latency p50 "
                f"{self.latency_ms['p50']:.1f} ms / p95 {self.latency_ms['p95']:.1f} ms, {self.dropped} dropped "
                f"frames, {audio}")


class Player:
    """One running show. `start()` opens everything, `run()` plays, `close()` releases every device."""

    def __init__(self, show: Show, source: str | None = None, record: Path | None = None,
                 window: bool | None = None, say=print) -> None:
        self.show, self.say = show, say
        self.source = source if source is not None else show.video.source
        self.record_path = record or (show.resolve(show.output.record) if show.output.record else None)
        self.want_window = show.output.window if window is None else window
        self.surface = ControlSurface(show, say)
        self.tree = self.surface.tree
        self._show_stamp = self._stamp()
        self._checked = 0.0
        self.captured: Mailbox[Frame] = Mailbox()
        self.stylized: Mailbox[Frame] = Mailbox()
        self.capture: Capture | None = None
        self.chain: ChainThread | None = None
        self.osc: OscServer | None = None
        self.oscquery: OscQueryServer | None = None
        self.midi: MidiControl | None = None
        self.audio: AudioEngine | None = None
        self.window: WindowOutput | None = None
        self.recorder: Recorder | None = None
        self.latencies: deque[float] = deque(maxlen=100_000)
        self.frames = 0
        self._last_index = -1
        self.reload_error = ""
        self._stop = threading.Event()

    def start(self) -> None:
        show = self.show
        try:
            stylizer = Stylizer(show.resolve(show.video.model), tuple(show.video.providers), show.video.threads)
            self.say(stylizer.session.describe())
            self.capture = Capture(self.source, show.video.width, show.video.height, show.video.fps, self.captured,
                                   self.say)
            stages = [stylizer]
            if show.video.latent:
                stages.append(LatentLayer(show.resolve(show.video.latent), show.video.width, show.video.height,
                                          tuple(show.video.providers)))
            stages.append(Blackout())
            self.chain = ChainThread(stages, self.surface.reader(), self.captured, self.stylized)
            self.surface.open()
            for section in TRANSPORTS:
                self._open_transport(section, show)
            if show.audio.enabled:
                self.audio = AudioEngine(self.tree, show.resolve(show.audio.model), show.audio.device or None,
                                         show.audio.samplerate, show.audio.blocksize, show.audio.voices,
                                         show.audio.pattern, self.surface.reader())
                self.say(self.audio.open())
            self._open_outputs()
        except BaseException:
            self.close()
            raise
        self.capture.start()
        self.chain.start()

    def _open_transport(self, section: str, show: Show) -> None:
        """Open the show's OSC, OSCQuery or MIDI (if enabled) and say where; LiveError if it cannot."""
        if section == "osc" and show.osc.enabled:
            self.osc = OscServer.from_section(self.tree, show.osc, system=self.system_handlers())
            self.say(self.osc.open())
        elif section == "oscquery" and show.oscquery.enabled:
            q = show.oscquery
            self.oscquery = OscQueryServer(self.tree, self.osc.port if self.osc else show.osc.port, q.host, q.port,
                                           q.name, q.zeroconf, osc_host=show.osc.host)
            self.say(self.oscquery.open())
        elif section == "midi" and show.midi.enabled:
            learned = show.resolve_inside(show.midi.learn_file, "[midi] learn_file") if show.midi.learn_file else None
            clock = self.surface.clock if show.tempo.source == "midi" else None
            self.midi = MidiControl(self.tree, show.midi, clock, learned, say=self.say)
            self.say(self.midi.open())

    def _reopen_transports(self, old: Show, new: Show) -> tuple[Show, list[str]]:
        """Apply a saved show's [osc], [oscquery] and [midi] while playing: each changed one is closed and opened
        with its new settings. One that cannot open (a port taken) goes back to its old settings and says why;
        returns the show as it now runs, with those sections as they really are."""
        changed = [s for s in TRANSPORTS if getattr(old, s) != getattr(new, s)
                   or (s == "oscquery" and old.osc != new.osc)]  # OSCQuery tells clients the OSC port
        notes = []
        for section in changed:
            current = getattr(self, section)
            if current is not None:
                current.close()
                setattr(self, section, None)
            try:
                self._open_transport(section, new)
                notes.append(f"[{section}] " + ("reopened" if getattr(new, section).enabled else "closed"))
            except LiveError as err:
                new = new.model_copy(update={section: getattr(old, section)})
                self.say(f"Show: [{section}] not applied: {err}")
                try:
                    self._open_transport(section, new)
                    notes.append(f"[{section}] kept as it was")
                except LiveError as again:  # the old settings no longer open either: play on without it
                    self.say(f"Show: [{section}] as it was does not open either: {again}")
                    notes.append(f"[{section}] off until the show restarts")
        return new, notes

    def _apply_devices(self, old: Show, new: Show) -> list[str]:
        """A saved show's new [video] source plays at once; other device settings say they need a restart."""
        notes = []
        if new.video.source != old.video.source and self.capture:
            self.source = new.video.source
            self.capture.switch(self.source)
            notes.append(f"[video] source now {self.source!r}")
        if new.video.model_copy(update={"source": old.video.source}) != old.video:
            notes.append("[video] changed: restart the show to apply it")
        notes += [f"[{section}] changed: restart the show to apply it" for section in ("output", "audio")
                  if getattr(new, section) != getattr(old, section)]
        return notes

    def _open_outputs(self) -> None:
        show = self.show
        if self.want_window and has_display():
            self.window = WindowOutput(show.output.title, show.video.width, show.video.height,
                                       show.output.fullscreen, show.output.monitor)
            self.say(f"Output: window '{show.output.title}'" + (" (fullscreen)" if show.output.fullscreen else ""))
        elif self.want_window and not self.record_path:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            self.record_path = Path("recordings") / f"{show.name}-{stamp}.mp4"
            display = os.environ.get("DISPLAY")
            why = f"display {display} does not answer" if display else "no display here"
            self.say(f"Output: {why}; recording to {self.record_path}")
        if self.record_path:
            rate = show.audio.samplerate if self.audio else None
            self.recorder = Recorder(self.record_path, show.video.width, show.video.height, show.video.fps, rate)
            opened = self.recorder.open()  # an unwritable path fails here, before the show plays
            if self.window:
                self.say(opened)
            if self.audio:
                self.audio.read_tap()  # start the recording's audio now, not with what played before

    def run(self, seconds: float | None = None) -> Summary:
        """Play until `seconds` pass, the window is closed, Ctrl-C, SIGTERM or SIGHUP (the terminal closed); then close
        everything."""
        ends = [s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]  # no SIGHUP on Windows
        previous = {s: signal.signal(s, lambda *_: self._stop.set()) for s in ends}
        started = time.perf_counter()
        try:
            while not self._stop.is_set():
                if seconds is not None and time.perf_counter() - started >= seconds:
                    break
                self.check_reload()
                frame = self.stylized.get(timeout=0.05)
                if frame is None:
                    continue
                self.show_frame(frame)
                if self.window and self.window.quit:
                    break
        except KeyboardInterrupt:
            pass
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
            summary = self.summary(time.perf_counter() - started)
            self.close()
        return summary

    def system_handlers(self) -> dict:
        """OSC's /live/* actions that are not parameters or events of the tree; each replies to its sender."""
        def cue(action):
            def handle(args: tuple, sender: str) -> list:
                try:
                    return [("/live/scene", [action(*args)])]
                except (ValueError, TypeError) as err:
                    return [("/live/error", [str(err)])]
            return handle

        return {"/live/scene/go": cue(lambda: self.surface.go()),
                "/live/scene/back": cue(lambda: self.surface.back()),
                "/live/scene/goto": cue(lambda target: self.surface.goto(
                    target if isinstance(target, str) else int(target))),
                "/live/learn": self._learn, "/live/learn/state": self._learn_state}

    def _learn(self, args: tuple, sender: str) -> list:
        """/live/learn s ADDRESS: the next MIDI control moved binds to ADDRESS (no argument: stop learning)."""
        if not self.midi:
            return [("/live/error", ["MIDI learn: this show has no MIDI ([midi] enabled = false)"])]
        if not args:
            self.midi.cancel_learn()
            return [("/live/learn/state", ["idle"])]
        try:
            self.midi.learn(str(args[0]))
        except LiveError as err:
            return [("/live/error", [str(err)])]
        self.say(f"MIDI learn: move the control for {args[0]}")
        return self._learn_state((), sender)

    def _learn_state(self, args: tuple, sender: str) -> list:
        if not self.midi:
            return [("/live/learn/state", ["off"])]
        if self.midi.learning:
            return [("/live/learn/state", [f"learning {self.midi.learning}"])]
        return [("/live/learn/state", ["idle " + (self.midi.notices[-1] if self.midi.notices else "")])]

    def _stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.show.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def check_reload(self, now: float | None = None) -> None:
        """If the show file was saved, apply it; an invalid file keeps the running show and says why."""
        now = time.perf_counter() if now is None else now
        if now - self._checked < RELOAD_CHECK_S:
            return
        self._checked = now
        stamp = self._stamp()
        if stamp is None or stamp == self._show_stamp:
            return
        self._show_stamp = stamp
        try:
            show = load_show(self.show.path)
            notes = self.surface.reload(show)
        except LiveError as err:
            self.reload_error = str(err)
            self.say(f"Show: {self.show.path.name} was saved but not applied, the show goes on as it was: {err}")
            return
        self.reload_error = ""
        old = self.show
        self.show, transport_notes = self._reopen_transports(old, show)
        notes += transport_notes + self._apply_devices(old, show)
        self.say(f"Show: reloaded {self.show.path.name}" + (f" ({'; '.join(notes)})" if notes else ""))

    #: Keys in the output window: a performer at the laptop can run the cue list without a controller.
    KEYS = {" ": "go", "\x08": "back", "b": "blackout", "p": "panic", "h": "hud"}

    def _keys(self) -> None:
        for key in self.window.keys:
            action = self.KEYS.get(key)
            if action == "go":
                self.say(f"Cue: {self.surface.go()}")
            elif action == "back":
                self.say(f"Cue: {self.surface.back()}")
            elif action == "blackout":
                self.surface.blackout(not self.tree.get("/live/blackout"))
            elif action == "panic":
                self.surface.panic()
            elif action == "hud":
                self.tree.set("/live/hud", not self.tree.get("/live/hud"), "keyboard")
        self.window.keys.clear()

    def show_frame(self, frame: Frame) -> None:
        """Put one stylized frame on every output; its latency is measured once it is out."""
        if self.window:
            self.window.write(hud.draw(frame.image, self.status_lines()) if self.tree.get("/live/hud")
                              else frame.image)
            if self.window.keys:
                self._keys()
        now = time.perf_counter()
        if self.recorder:
            try:
                self.recorder.write(frame.image, now)
                if self.audio:
                    position, samples = self.audio.read_tap()
                    self.recorder.write_audio(samples, position)
            except LiveError as err:  # disk full, I/O error: that recording ends, the show plays on
                self.say(f"Output: {err.what}; the show plays on without it — fix: {err.fix}")
                self.recorder.close()
                self.recorder = None
        if frame.index != self._last_index:  # a re-render of the same camera frame (a control moved) is not a
            self.latencies.append((now - frame.captured) * 1000)  # new measurement of capture -> output latency
            self._last_index = frame.index
        self.frames += 1

    def status_lines(self) -> list[str]:
        """The HUD's lines: what a performer needs to know at a glance, problems last."""
        recent = list(itertools.islice(reversed(self.latencies), 30))  # not a copy of the whole history
        values = self.tree.snapshot
        lines = [f"{self.show.name}  latency {percentile(recent, 50):.0f} ms  dropped "
                 f"{self.captured.dropped + self.stylized.dropped}",
                 f"{values.get('/tempo/bpm', 0):.1f} bpm  cue {values.get('/scene/cue', '-')}"
                 + ("  BLACKOUT" if values.get("/live/blackout") else "")]
        if self.osc:
            counts = self.osc.stats()
            lines.append(f"OSC {counts.get('applied', 0)} applied, {counts.get('rejected', 0)} rejected")
            if counts.get("last_problem"):
                lines.append(f"  {str(counts['last_problem'])[:70]}")
        if self.midi:
            counts = self.midi.stats()
            line = f"MIDI {counts.get('in', 0)} in, {counts.get('applied', 0)} applied"
            if counts.get("missing_inputs"):
                line += f", waiting for {', '.join(counts['missing_inputs'])}"
            if counts.get("learning"):
                line += f", LEARN {counts['learning']}: move a control"
            lines.append(line)
        if self.audio:
            stats = self.audio.stats()
            lines.append(f"audio {stats.get('device') or 'silent'}  starved {stats.get('starved', 0)}")
        if self.reload_error:
            lines.append(f"show file NOT reloaded: {self.reload_error[:60]}")
        return lines

    def summary(self, seconds: float) -> Summary:
        latency = {f"p{q}": percentile(self.latencies, q) for q in (50, 95, 99)}
        stats = self.audio.stats() if self.audio else {}
        underruns = int(stats["underruns"]) if stats.get("device") else None
        return Summary(seconds, self.frames, self.captured.dropped + self.stylized.dropped, latency, underruns)

    def close(self) -> None:
        """Stop every thread and release every device; safe to call twice."""
        for stage in (self.capture, self.chain):
            if stage:
                stage.stop()
        self.capture = self.chain = None
        for closer in (self.osc, self.oscquery, self.midi, self.audio, self.window, self.recorder, self.surface):
            if closer:
                closer.close()
        self.osc = self.oscquery = self.midi = self.audio = self.window = self.recorder = None
