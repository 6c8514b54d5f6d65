"""`live bench --audio`: the show's sound under load, measured the way a performer meets it, per cause.

The bench starts its own clocked JACK server (dummy backend, 48 kHz, 128-frame periods) with JACK's own C example
client, `jack_simple_client`, beside it as the machine's reference, then plays the show as a user would (`live run`
in a subprocess, its window with the HUD on a private Xvfb display when there is one, the built-in source as the
camera, audio to the JACK device "system") and runs phases of S seconds: quiet (video only), an OSC storm (10,000
valid messages/s from a separate process), and with `--hog` a busy neighbour (a pure-Python loop per core at normal
priority), alone and with the storm. Only what a user sees is used: the show's process, its OSC port, its summary
line and /live/status, and JACK ports. In each phase:

- late cycles from jackd's own log (`-v`): `JackTimedDriver::Process XRun` is the server's timer missing;
  `client = NAME was not finished, state = Triggered` means the host did not wake that client in time,
  `state = Running` that it woke but its code did not finish (shared/real-parts.md). Split into ours (the show's
  audio client, its MIDI clients), the reference's, and the bench's own (its probe's clients);
- starved blocks (ours, and those while the machine held the real-time render process off its CPU), notes that
  came too late for their frame, device xruns, lead and render p99 from the show's /live/status (queried once a
  second);
- control -> onset: a probe process plays a short note every ~0.3 s, alternately over OSC (`/synth/note`) and JACK
  MIDI, stamping each send with time.monotonic(), and records the show's output ports as a JACK client, stamping
  each block with jack_frames_to_time() of its cycle's first frame. A note is sent only once the one before has
  sounded, so a late note is never taken for the next one's onset. jack_get_time() is not time.monotonic(): JACK 1.9
  reads CLOCK_MONOTONIC_RAW (here 250 ms apart after 5 h up, drifting with NTP's slew), so the probe measures the
  difference by the tightest of 200 jack_get_time() reads bracketed by two time.monotonic_ns() reads, at its start
  and end, and converts with it. Checked per block against time.monotonic() in the probe's callback: a converted
  cycle start comes just before the callback wakes (median tens of µs), except on this VM sometimes up to
  milliseconds after it (after the dummy driver's timer xruns); then the callback's wake time is taken instead, and
  `clock.after_wake_share` says how often.
  The onset is the first sample after the send above three times the level of the last 20 ms of sound before it (the
  last note's tail; a starved device's zeros skipped, so the tail resuming after them is not taken for an onset)
  and above a floor: with the synth's 10 ms linear attack and an 880 Hz note, well under a millisecond after
  the note begins. It is the time in the JACK graph (the sample's cycle start + its offset); a card adds its own
  output latency. A note whose blocks the recording missed (the probe's Python callback was late) is left out.
- `--hog`: a pure-Python busy loop per core at normal priority, in the hog phases.
- steal: the CPU time a hypervisor took from this machine during the phase (/proc/stat), ms per second over all
  CPUs: what can hold even a real-time thread off its CPU.

Machines here are shared and noisy: compare ours with the reference of the same run, not numbers across runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from live.errors import LiveError

RATE, PERIOD = 48000, 128
REFERENCE = "jack_simple_client"  # JACK's C example client, under the name it gives itself
BENCH_CLIENTS = "live-bench-"  # the bench's own JACK clients start with this
STORM_RATE = 10_000  # OSC messages/s
STORM_ADDRESSES = ("/video/strength", "/synth/timbre/a")
PROBE_EVERY_S = (0.27, 0.33)  # the probe's notes are this far apart (random: not locked to the block clock)
PROBE_HOLD_S = 0.05  # a probe note's length; its tail has fallen ~40 dB by the next one
PROBE_NOTE, PROBE_VELOCITY = 81, 0.8  # A5, 880 Hz: a short period, so the first loud sample comes early
PROBE_SEND_SLACK_S = 0.001  # a probe note whose send call took longer is left out: the probe was held, not the show
PROBE_WARMUP_S = 1.0  # the show looks for the probe's MIDI port every 0.25 s
ONSET_FLOOR = 1e-3  # a sample above this and above 3x the tail before the send is the onset
ONSET_WINDOW_S = 1.0  # an onset later than this after its send (or after the next send) is not found
TAIL_S = 0.02  # the onset threshold is three times the loudest of this much sound before the send ...
LOOKBACK_S = 0.2  # ... found this far back at most (a starved device's zeros are skipped)
START_TIMEOUT_S = 180.0  # the show loads its models before it plays
JACK_START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
STATUS_EVERY_S = 1.0
WARMUP_S = 3.0  # after the show plays, before the first phase

_NOT_FINISHED = re.compile(r"client = (?P<name>.+?) was not finished, state = (?P<state>\w+)")
_SERVER_XRUN = "JackTimedDriver::Process XRun"
_GRAPH_LATE = "ProcessGraphAsyncMaster: Process error"


# ------------------------------------------------------------------------------------------ jackd's own log

def parse_jack_log(lines: Iterable[str]) -> dict:
    """Late cycles by cause from jackd's stderr (`jackd -v`): the server's own timer xruns, cycles in which some
    client was late (`graph`), and per client how often it was not woken in time (`Triggered`) or did not finish
    (`Running`; other states under their own names)."""
    server = graph = 0
    clients: dict[str, dict[str, int]] = {}
    for line in lines:
        if _SERVER_XRUN in line:
            server += 1
        elif _GRAPH_LATE in line:
            graph += 1
        elif match := _NOT_FINISHED.search(line):
            states = clients.setdefault(match["name"], {})
            states[match["state"]] = states.get(match["state"], 0) + 1
    return {"server": server, "graph": graph, "clients": clients}


def late_by_owner(log: dict, ours: set[str]) -> dict:
    """`parse_jack_log`'s clients summed per owner: `ours` (the show's audio clients), the show's other clients
    (its MIDI ports), the reference, the bench's own; each as host (Triggered: not woken in time) and code
    (Running and any other state: woken, too slow)."""
    owners = {key: {"host": 0, "code": 0, "clients": []} for key in ("ours", "show_midi", "reference", "bench")}
    for name, states in log["clients"].items():
        owner = owners["bench" if name.startswith(BENCH_CLIENTS) else "reference" if name == REFERENCE
                       else "ours" if name in ours else "show_midi"]
        owner["host"] += states.get("Triggered", 0)
        owner["code"] += sum(n for state, n in states.items() if state != "Triggered")
        owner["clients"].append(name)
    return owners


class TimedLines:
    """A child's text stream read in a thread, each line stamped with time.monotonic() when read (keeps the newest
    `keep`); so a child never blocks on a full pipe."""

    def __init__(self, stream, keep: int = 200_000, skip: str | None = None) -> None:
        self.lines: deque[tuple[float, str]] = deque(maxlen=keep)
        self._skip = skip
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True, name="bench-reader")
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            if self._skip is None or not line.startswith(self._skip):
                self.lines.append((time.monotonic(), line.rstrip("\n")))

    def between(self, start: float, end: float) -> list[str]:
        return [line for at, line in list(self.lines) if start <= at <= end]

    def find(self, text: str) -> str | None:
        return next((line for _, line in reversed(list(self.lines)) if text in line), None)

    def last(self, n: int) -> list[str]:
        return [line for _, line in list(self.lines)[-n:]]

    def wait(self, timeout: float) -> None:
        """Until the stream has ended (the child exited) and every line is in, or `timeout`."""
        self._thread.join(timeout)


# ------------------------------------------------------------------------------------------------ processes

class Children:
    """Every process the bench starts, in new sessions (a Ctrl-C reaches the bench, which stops them in order),
    stopped in reverse order in bounded time. jackd only ever gets SIGTERM."""

    def __init__(self, env: dict[str, str], say: Callable[[str], None]) -> None:
        self.env, self.say = env, say
        self.procs: list[subprocess.Popen] = []

    def start(self, args: list[str], **kwargs) -> subprocess.Popen:
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.DEVNULL)
        proc = subprocess.Popen(args, env=self.env, start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def helper(self, role: str, *args: object, **kwargs) -> subprocess.Popen:
        """This module's `role` (below) in its own Python process."""
        return self.start([sys.executable, "-m", "live.bench_audio", role, *map(str, args)], **kwargs)

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> None:
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                if Path(str(proc.args[0])).name == "jackd":
                    self.say(f"bench: jackd (pid {proc.pid}) did not stop within {timeout:g} s after SIGTERM; "
                             "left running (never SIGKILL a JACK server)")
                    return
                proc.kill()
                proc.wait(timeout=timeout)
        if proc in self.procs:
            self.procs.remove(proc)

    def close(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)


def _tools() -> dict[str, str | None]:
    found = {tool: shutil.which(tool) for tool in ("jackd", "jack_simple_client", "jack_lsp")}
    missing = [tool for tool, path in found.items() if path is None]
    if missing:
        raise LiveError(f"live bench --audio needs {', '.join(missing)}, which is not installed",
                        "install JACK with its example clients: `make test`, or apt-get install jackd2")
    found["Xvfb"] = shutil.which("Xvfb")  # optional: without it the show records instead of showing its window
    return found


def start_jack(children: Children, name: str) -> TimedLines:
    """`jackd -v` on the dummy backend under `name`; returns its stderr (the xrun lines) once its ports exist."""
    proc = children.start(["jackd", "-v", "-n", name, "-d", "dummy", "-r", str(RATE), "-p", str(PERIOD)],
                          stderr=subprocess.PIPE, text=True)  # stdout: -v's chatter, not needed
    log = TimedLines(proc.stderr)
    deadline = time.monotonic() + JACK_START_TIMEOUT_S
    while True:
        listed = subprocess.run(["jack_lsp"], env=children.env, capture_output=True, text=True, timeout=5)
        if "system:playback_1" in listed.stdout:
            return log
        if proc.poll() is not None or time.monotonic() > deadline:
            raise LiveError(f"jackd did not start: {' / '.join(log.last(5)) or 'no output'}",
                            "check that no other JACK server holds the audio device, and that jackd2 is installed")
        time.sleep(0.1)


def start_display(children: Children) -> str:
    """A private Xvfb display for the show's window; its DISPLAY value."""
    read, write = os.pipe()
    children.start(["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x720x24", "-nolisten", "tcp"],
                   pass_fds=(write,))
    os.close(write)
    with os.fdopen(read) as pipe:
        number = pipe.readline().strip()
    if not number:
        raise LiveError("Xvfb did not start", "check the xvfb package (`make test` installs it)")
    return f":{number}"


# ----------------------------------------------------------------------------------------------- the show

def bench_show(show_path: Path, folder: Path, osc_port: int, lead: str | float | None = None,
               listen: bool | None = None) -> Path:
    """A copy of the show in `folder` as the bench plays it: audio to JACK's "system", OSC on `osc_port` from this
    machine, MIDI over JACK from the probe's port, the HUD on, the arpeggio off (only the probe's notes sound);
    model paths made absolute; `lead` (not None) for [audio] lead. `listen` True: the show hears JACK's "system"
    input ([audio_in]), its synth records and analyses that input for timbre transfer ([audio] follow_input, at the
    show's /synth/follow), and it watches its camera with every analysis ([watch], faces and person mask); False: none;
    None: as the show says. Everything else (video size, model, stages, outputs) is the show's own."""
    import tomli_w

    try:
        data = tomllib.loads(show_path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise LiveError(f"{show_path}: cannot read it as a show ({err})", "give a show file, e.g. show_configs/vj.toml")
    watch = data.get("watch", {})
    for table, key in ((data.get("video", {}), "model"), (data.get("audio", {}), "model"), (watch, "face_model"),
                       (watch, "mask_model"), *((stage, "model") for stage in data.get("stages", []))):
        if isinstance(table.get(key), str) and table[key]:
            table[key] = str((show_path.parent / table[key]).resolve())
    if listen is not None:
        models = Path(__file__).resolve().parent.parent / "exported_models"
        data["audio_in"] = {**data.get("audio_in", {}), "source": "system" if listen else ""}
        data["audio"]["follow_input"] = "system" if listen else ""  # the synth's own input, for timbre transfer
        data["watch"] = {**watch, "enabled": listen} if not listen else {
            **watch, "enabled": True, "face_model": watch.get("face_model") or str(models / "face-detection.json"),
            "mask_model": watch.get("mask_model") or str(models / "person-segmentation.json")}
        if not listen and data.get("tempo", {}).get("source") == "audio":
            data["tempo"]["source"] = "internal"
        if not listen:  # what listens to nothing would name a source that is not there, and so would its controls
            gone = {n for n, m in data.get("mod", {}).items() if m.get("source", "").startswith("/in/")}
            data["mod"] = {n: m for n, m in data.get("mod", {}).items() if n not in gone}
            controls = {f"/mod/{name}/{key}" for name in gone for key in ("depth", "beats")}
            midi = data.setdefault("midi", {})
            midi["map"] = [m for m in midi.get("map", []) if m.get("param") not in controls]
            data["stages"] = [s for s in data.get("stages", []) if s.get("kind") != "mask"]
            data.pop("map", None)
    data.setdefault("audio", {}).update(enabled=True, device="system")
    if lead is not None:
        data["audio"]["lead"] = lead
    data["osc"] = {**data.get("osc", {}), "enabled": True, "host": "127.0.0.1", "port": osc_port, "allow": []}
    data["oscquery"] = {**data.get("oscquery", {}), "port": 0, "zeroconf": False}
    midi = data.setdefault("midi", {})
    midi.update(enabled=True, api="jack", inputs=[f"{BENCH_CLIENTS}probe"], outputs=[], learn_file="")
    midi.pop("notes", None)  # the default: notes play /synth/note
    data.setdefault("params", {}).update({"/synth/auto": False, "/live/hud": True})
    path = folder / show_path.name
    path.write_text(tomli_w.dumps(data))
    return path


def query_status(port: int, timeout: float = 1.0) -> dict | None:
    """The show's /live/status over OSC: its counters and its audio part's figures; None if it did not answer."""
    from live.control.osc_codec import OscError, encode_message, parse_message

    counters, parts = {}, []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(timeout)
        sock.sendto(encode_message("/live/status"), ("127.0.0.1", port))
        try:
            while True:
                try:
                    message = parse_message(sock.recv(65536))
                except OscError:
                    continue
                if message.address == "/live/status/part":
                    parts.append(str(message.args[0]))
                elif message.address.startswith("/live/status/"):
                    counters[message.address.rsplit("/", 1)[1]] = message.args[0]
                sock.settimeout(0.2)  # the rest of the replies come right after the first
        except (TimeoutError, socket.timeout):
            pass
    if not counters:
        return None
    return {"osc": counters, "audio": audio_figures(next((p for p in parts if p.startswith("audio")), ""))}


def audio_figures(line: str) -> dict:
    """The audio part's status line ("audio system 48 kHz; starved 0x (ours), 2x held off the CPU by the machine,
    2 device xruns, lead 16.0 ms (adaptive), render p99 0.41 ms", maybe more) as numbers; absent figures are left
    out, but for `held`, which the line leaves out while it is 0."""
    patterns = {"starved": r"starved (\d+)x", "xruns": r"(\d+) device xruns", "lead_ms": r"lead ([\d.]+) ms",
                "render_p99_ms": r"render p99 ([\d.]+) ms"}
    figures = {key: float(m[1]) for key, pattern in patterns.items() if (m := re.search(pattern, line))}
    figures["held"] = float(m[1]) if (m := re.search(r"(\d+)x held off the CPU", line)) else 0.0
    figures["late_notes"] = float(m[1]) if (m := re.search(r"(\d+) notes? late", line)) else 0.0
    figures["line"] = line
    return figures


# ---------------------------------------------------------------------------------------------- the phases

@dataclass
class Phase:
    name: str
    storm: bool
    hog: bool


def steal_seconds() -> float:
    """CPU time the hypervisor took from this (virtual) machine so far, all CPUs together (/proc/stat's steal, in
    USER_HZ ticks); -1 where there is no such figure."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return -1.0


def phases(hog: bool) -> list[Phase]:
    chosen = [Phase("quiet", False, False), Phase("storm", True, False)]
    return chosen + ([Phase("hog", False, True), Phase("storm+hog", True, True)] if hog else [])


def run_phase(phase: Phase, children: Children, jack_log: TimedLines, port: int, seconds: float,
              folder: Path) -> dict:
    """One phase: the helpers for it started, the show's status polled, every helper's result gathered."""
    hogs = [children.helper("hog", seconds + 1) for _ in range(os.cpu_count() or 1)] if phase.hog else []
    recording = folder / f"{phase.name}.npz"
    read, write = os.pipe()  # its own line: jackd -v makes every JACK client chatter on stdout, unflushed C stdio
    probe = children.helper("probe", port, seconds, recording, write, pass_fds=(write,))
    os.close(write)
    with os.fdopen(read) as pipe:
        ready = pipe.readline().split()
    if ready[:1] != ["ready"]:
        raise LiveError(f"the bench's JACK capture client found no show output ports ({' '.join(ready) or 'it exited'})",
                        "the show did not open JACK's 'system' device: see its lines above")
    ours = {name.split(":", 1)[0] for name in ready[1:]}
    storm = children.helper("storm", port, STORM_RATE, seconds, stdout=subprocess.PIPE, text=True) \
        if phase.storm else None
    start, stolen = time.monotonic(), steal_seconds()
    first = query_status(port)
    samples = [first] if first else []
    while time.monotonic() - start < seconds:
        time.sleep(min(STATUS_EVERY_S, max(seconds - (time.monotonic() - start), 0.0)))
        status = query_status(port)
        if status:
            samples.append(status)
    end, stolen = time.monotonic(), steal_seconds() - stolen if stolen >= 0 else -1.0
    for proc in (probe, storm, *hogs):
        if proc is not None:
            try:
                proc.wait(timeout=STOP_TIMEOUT_S + ONSET_WINDOW_S)
            except subprocess.TimeoutExpired:
                children.stop(proc)
    log = parse_jack_log(jack_log.between(start, end + 0.1))
    result: dict = {"seconds": round(end - start, 2), "storm": phase.storm, "hog": phase.hog,
                    "late_cycles": {"server": log["server"], "graph": log["graph"], **late_by_owner(log, ours)},
                    "jack_clients": log["clients"],
                    "steal_ms_per_s": round(stolen * 1000 / max(end - start, 1e-9), 1) if stolen >= 0 else None}
    result.update(show_figures(samples))
    if storm is not None:
        out = storm.stdout.read().split()
        result["storm_sent_per_s"] = round(int(out[0]) / float(out[1]), 0) if len(out) == 2 else 0.0
        if len(samples) >= 2:
            received = samples[-1]["osc"].get("packets", 0) - samples[0]["osc"].get("packets", 0)
            result["storm_received_per_s"] = round(received / max(end - start, 1e-9), 0)
    if recording.exists():
        result.update(onset_latencies(recording))
        recording.unlink()
    else:  # the probe was stopped before it wrote (a machine that held it past its time): the rest still counts
        result.update({f"{kind}_onset_ms": latency_figures([], 0) for kind in ("osc", "midi")}, probe_lost=True)
    return result


def show_figures(samples: list[dict]) -> dict:
    """Starved blocks (ours, and held off the CPU by the machine), late notes and device xruns in the phase (last
    status less the first), the lead's range and the worst render p99 (each sample is over the engine's last 1024
    blocks) from the show's /live/status."""
    audio = [s["audio"] for s in samples if "starved" in s["audio"]]
    if len(audio) < 2:
        return {"starved": None, "held": None, "late_notes": None, "device_xruns": None, "lead_ms": None,
                "render_p99_ms": None, "status_samples": 0,
                "audio_status": audio[-1]["line"] if audio else ""}
    leads = [a["lead_ms"] for a in audio if "lead_ms" in a]
    p99s = [a["render_p99_ms"] for a in audio if "render_p99_ms" in a]
    return {"starved": int(audio[-1]["starved"] - audio[0]["starved"]),
            "held": int(audio[-1]["held"] - audio[0]["held"]),
            "late_notes": int(audio[-1]["late_notes"] - audio[0]["late_notes"]),
            "device_xruns": int(audio[-1]["xruns"] - audio[0]["xruns"]),
            "lead_ms": [min(leads), max(leads)] if leads else None,
            "render_p99_ms": max(p99s) if p99s else None, "status_samples": len(audio),
            "audio_status": audio[-1]["line"]}


def onset_latencies(recording: Path) -> dict:
    """Send -> onset in the JACK graph for every probe note, per kind (osc, midi), from the probe's recording."""
    data = np.load(recording)
    blocks, frames, notes = data["audio"], data["frames"], data["notes"]
    clocks = data["clocks"]  # (monotonic s, jack - monotonic µs, bracket µs) at the start and the end
    jack_s = data["usecs"].astype(np.float64) / 1e6
    converted = jack_s - np.interp(jack_s, clocks[:, 0] + clocks[:, 1] / 1e6, clocks[:, 1]) / 1e6  # monotonic s
    wake_ms = (data["woke"] - converted) * 1000  # cycle start (converted) -> the callback: small and >= 0 ...
    starts = np.minimum(converted, data["woke"])  # ... but not always (see `clock`): a cycle starts by its callback
    found: dict[str, list[float]] = {"osc": [], "midi": []}
    unmeasured = 0
    slow_sends = 0
    for i, (is_midi, sent, returned) in enumerate(notes):
        if returned - sent > PROBE_SEND_SLACK_S:  # the machine held the probe between its stamp and the send
            slow_sends += 1
            continue
        until = min(sent + ONSET_WINDOW_S, notes[i + 1][1] if i + 1 < len(notes) else np.inf)
        latency = _onset_after(blocks, frames, starts, sent, until)
        if latency is None or latency != latency:  # NaN: the recording missed a block around it
            unmeasured += latency is not None
            continue
        found["midi" if is_midi else "osc"].append(latency * 1000)
    result: dict = {"clock": {"jack_minus_monotonic_ms": [round(float(c) / 1000, 3) for c in clocks[:, 1]],
                              "bracket_us": round(float(clocks[:, 2].max()), 2),
                              "wake_ms": {"min": round(float(wake_ms.min()), 3) if len(wake_ms) else None,
                                          "p50": round(float(np.median(wake_ms)), 3) if len(wake_ms) else None},
                              "after_wake_share": round(float(np.mean(wake_ms < 0)), 4) if len(wake_ms) else None},
                    "capture_gaps": int(np.count_nonzero(np.diff(frames) != PERIOD)),
                    "onset_unmeasured": unmeasured, "probe_slow_sends": slow_sends,
                    "midi_connected": bool(data["midi"])}
    for kind, latencies in found.items():
        result[f"{kind}_onset_ms"] = latency_figures(latencies, int(np.sum(notes[:, 0] == (kind == "midi"))))
    return result


def _onset_after(blocks: np.ndarray, frames: np.ndarray, starts: np.ndarray, sent: float,
                 until: float) -> float | None:
    """Seconds from `sent` to the first sample above the onset threshold, looked for until `until`; NaN if the
    recording has a gap there, None if nothing sounded.

    The threshold is three times the loudest of the last TAIL_S of sound before the send (the previous note's
    tail), skipping exact zeros: a starved device plays zeros, and the tail resuming after them is not an onset."""
    period = PERIOD / RATE
    chosen = np.flatnonzero((starts + period > sent - LOOKBACK_S) & (starts < until))
    near = chosen[starts[chosen] + period > sent - TAIL_S]
    if len(near) == 0:
        return None
    if np.any(np.diff(frames[near]) != PERIOD):
        return float("nan")
    level = np.abs(blocks[chosen]).ravel()
    times = (starts[chosen][:, None] + np.arange(PERIOD)[None, :] / RATE).ravel()
    before = level[(times < sent) & (level > 0)][-int(TAIL_S * RATE):]
    threshold = max(ONSET_FLOOR, 3.0 * float(before.max()) if len(before) else 0.0)
    after = np.flatnonzero((times >= sent) & (times < until) & (level > threshold))
    return float(times[after[0]] - sent) if len(after) else None


def latency_figures(latencies_ms: list[float], sent: int) -> dict:
    values = np.asarray(latencies_ms)
    if not len(values):
        return {"sent": sent, "found": 0}
    return {"sent": sent, "found": len(values), "p50": round(float(np.percentile(values, 50)), 2),
            "p95": round(float(np.percentile(values, 95)), 2), "max": round(float(values.max()), 2),
            "min": round(float(values.min()), 2), "jitter": round(float(values.std()), 2)}


# ------------------------------------------------------------------------------------------------ the bench

def audio_bench(show_path: Path, seconds: float = 60.0, hog: bool = False, lead: str | float | None = None,
                print_: Callable[[str], None] = print, listen: bool | None = None) -> dict:
    """Play the show on a JACK server of the bench's own and measure each phase; prints a table and returns
    `{"show", "seconds", "period", "samplerate", "reference", "display", "phases": {name: {...}}, "summary"}`.
    `lead`: the show's [audio] lead for this run ("auto" or milliseconds; None: the show's own); `listen`: with or
    without the show's analysis of its input (see bench_show).
    The show's window (with the HUD) goes to a private Xvfb display where Xvfb is installed; else the show
    records instead (no HUD drawn)."""
    tools = _tools()
    name = f"live-bench-{os.getpid()}"
    env = {**os.environ, "JACK_DEFAULT_SERVER": name, "JACK_NO_START_SERVER": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("WAYLAND_DISPLAY", None)
    results: dict = {"show": str(show_path), "seconds": seconds, "period": PERIOD, "samplerate": RATE,
                     "reference": REFERENCE, "lead": lead, "listen": listen, "phases": {}}
    with tempfile.TemporaryDirectory(prefix="live-bench-audio-") as temp, ExitStack() as stack:
        folder = Path(temp)
        children = Children(env, print_)
        stack.callback(children.close)
        jack_log = start_jack(children, name)
        children.start([str(tools["jack_simple_client"])])
        args = ["run", "--source", "builtin"]
        if tools["Xvfb"]:
            env["DISPLAY"] = start_display(children)
        else:
            env.pop("DISPLAY", None)
            args += ["--no-window", "--record", str(folder / "show.mp4")]
        results["display"] = "Xvfb " + env["DISPLAY"] if tools["Xvfb"] else "none (recording; no HUD drawn)"
        port = _free_port()
        show_file = bench_show(show_path, folder, port, lead, listen)
        show = children.start([sys.executable, "-m", "live", *args[:1], str(show_file), *args[1:]],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        said = TimedLines(show.stdout, keep=400, skip="Jack: ")  # -v makes JACK's clients chatter too
        _wait_playing(show, said)
        audio_line = said.find("Audio:") or ""
        if "JACK" not in audio_line:
            raise LiveError(f"the show did not play to JACK: {audio_line or 'no audio line'}",
                            "check the show's [audio] section (enabled, model)")
        time.sleep(WARMUP_S)
        hears = {None: "", True: ", hearing and watching its inputs", False: ", its inputs not analysed"}[listen]
        print_(f"\naudio: {Path(show_path).name}{hears} on a JACK dummy server ({RATE} Hz, {PERIOD}-frame periods), "
               f"{REFERENCE} as reference, {results['display']}; {seconds:g} s per phase")
        for phase in phases(hog):
            print_(f"  {phase.name} ...")
            results["phases"][phase.name] = run_phase(phase, children, jack_log, port, seconds, folder)
        children.stop(show)
        said.wait(2.0)
        summary = said.find("Played ") or ""
        results["summary"] = summary[summary.find("Played "):]  # JACK's unflushed chatter may precede it
    print_table(results, print_)
    return results


def inputs_bench(show_path: Path, seconds: float = 60.0, hog: bool = False, lead: str | float | None = None,
                 print_: Callable[[str], None] = print) -> dict:
    """The cost of listening and watching, side by side in one run: the show played without analysing its inputs,
    then hearing JACK's input and watching its camera with every analysis; each a full `audio_bench`, then the
    frame rate and late cycles (ours against the reference's) of the two, compared."""
    runs = {name: audio_bench(show_path, seconds, hog, lead, print_, listen=on)
            for name, on in (("without", False), ("with", True))}
    print_("\ninputs analysed or not, side by side (per phase: late cycles of the show's clients, its input among "
           "them / the reference's, host + code):")
    for phase in runs["with"]["phases"]:
        cells = []
        for name, run in runs.items():
            c = run["phases"][phase]["late_cycles"]
            show = sum(c[o][k] for o in ("ours", "show_midi") for k in ("host", "code"))
            cells.append(f"{name} {show}/{c['reference']['host'] + c['reference']['code']}")
        print_(f"  {phase:<10}" + "   ".join(cells))
    fps = {name: re.search(r"([\d.]+) fps", run.get("summary", "")) for name, run in runs.items()}
    if all(fps.values()):
        without, with_ = (float(fps[n].group(1)) for n in ("without", "with"))
        print_(f"  video: {without:.1f} fps without, {with_:.1f} fps with analysis ({with_ / without:.2f}x)")
    return runs


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_playing(show: subprocess.Popen, said: TimedLines) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not said.find("Playing"):
        if show.poll() is not None or time.monotonic() > deadline:
            time.sleep(0.2)  # the reader's last lines
            raise LiveError("the show did not start: " + " / ".join(said.last(4)),
                            "run `live run SHOW` by itself to see why")
        time.sleep(0.1)


def print_table(results: dict, print_: Callable[[str], None] = print) -> None:
    def late(owner: dict) -> str:
        return f"{owner['host']}/{owner['code']}"

    def onset(figures: dict) -> str:
        if not figures.get("sent"):
            return "no recording (probe stopped)"
        if not figures.get("found"):
            return f"none of {figures['sent']}"
        return (f"{figures['p50']:.1f}/{figures['p95']:.1f}/{figures['max']:.1f} ±{figures['jitter']:.1f} "
                f"({figures['found']}/{figures['sent']})")

    def number(value, spec: str) -> str:
        return "?" if value is None else format(value, spec)

    head = (f"  {'phase':<10}{'server':>7}{'ours h/c':>10}{'midi h/c':>10}{'ref h/c':>9}{'bench h/c':>10}"
            f"{'starved':>8}{'held':>5}{'late':>5}{'steal':>6}"
            f"{'xruns':>7}{'lead ms':>12}{'p99 ms':>8}  {'OSC -> onset ms p50/p95/max ±sd (n)':<38}"
            f"{'MIDI -> onset ms':<36}{'storm/s':>8}")
    print_(head)
    for name, r in results["phases"].items():
        lead = r["lead_ms"]
        lead_text = "?" if lead is None else f"{lead[0]:.1f}" if lead[0] == lead[1] else f"{lead[0]:.1f}-{lead[1]:.1f}"
        storm = f"{r.get('storm_received_per_s', 0):.0f}" if r["storm"] else "-"
        c = r["late_cycles"]
        print_(f"  {name:<10}{c['server']:>7}{late(c['ours']):>10}{late(c['show_midi']):>10}{late(c['reference']):>9}"
               f"{late(c['bench']):>10}"
               f"{number(r['starved'], 'd'):>8}{number(r['held'], 'd'):>5}{number(r['late_notes'], 'd'):>5}"
               f"{number(r['steal_ms_per_s'], '.0f'):>6}"
               f"{number(r['device_xruns'], 'd'):>7}"
               f"{lead_text:>12}"
               f"{number(r['render_p99_ms'], '.2f'):>8}  {onset(r['osc_onset_ms']):<38}{onset(r['midi_onset_ms']):<36}"
               f"{storm:>8}")
    print_("  late cycles from jackd's log: server = its timer's own xruns; h = host did not wake the client in time "
           "(Triggered), c = its code did not finish (Running); ours = the show's audio client, midi = its MIDI "
           f"clients, ref = {REFERENCE}, bench = the bench's capture and probe clients")
    print_("  starved (ours), held (ran dry while the machine held the real-time render process off its CPU for a "
           "period or more), late (notes that reached the render process too late for their frame), xruns: the "
           "show's counters over the phase; steal: ms per s the hypervisor took from this machine's CPUs "
           "(/proc/stat); lead: its range; p99: the worst render p99 seen (each over the last 1024 blocks); onset: "
           "send (time.monotonic) -> first sample in the JACK graph, leaving out notes whose send call took over "
           "1 ms (the probe held, not the show)")
    if results.get("summary"):
        print_(f"  show: {results['summary']}")


# ---------------------------------------------------------------------------------- helper processes (roles)

def _storm(port: str, rate: str, seconds: str) -> None:
    """Valid OSC messages to the show's parameters at `rate` per second; prints how many were sent, in what time."""
    import random

    from live.control.osc_codec import encode_message

    rng = random.Random(0)
    packets = [encode_message(STORM_ADDRESSES[i % 2], [rng.random() if i % 2 == 0 else rng.uniform(-1, 1)])
               for i in range(1024)]
    target, pace, duration = ("127.0.0.1", int(port)), float(rate), float(seconds)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent, start = 0, time.monotonic()
    while (now := time.monotonic()) - start < duration:
        due = int((now - start) * pace)
        while sent < due:
            sock.sendto(packets[sent % len(packets)], target)
            sent += 1
        time.sleep(0.001)
    print(sent, time.monotonic() - start)


def _probe(port: str, seconds: str, out: str, ready_fd: str) -> None:
    """A JACK client recording the show's outputs (summed), each block stamped with its cycle's first frame and
    jack_frames_to_time() of it (µs of jack_get_time), that plays short notes into the show, alternately over OSC
    and JACK MIDI, each send stamped with time.monotonic(). A note is sent only once the one before has sounded
    (or ONSET_WINDOW_S passed), so a late note is never taken for the next one's onset. Also measures how
    jack_get_time() differs from time.monotonic() at the start and the end. Writes "ready PORT..." (or why not) to
    the pipe `ready_fd` once wired; saves everything to `out` (.npz)."""
    import random

    import jack
    import rtmidi

    from live.control.osc_codec import encode_message

    libjack = ctypes.CDLL(ctypes.util.find_library("jack") or "libjack.so.0")
    libjack.jack_client_open.restype = ctypes.c_void_p
    libjack.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    libjack.jack_frames_to_time.restype = ctypes.c_uint64
    libjack.jack_frames_to_time.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    libjack.jack_get_time.restype = ctypes.c_uint64
    libjack.jack_client_close.argtypes = [ctypes.c_void_p]
    status = ctypes.c_int(0)
    clock = libjack.jack_client_open(f"{BENCH_CLIENTS}clock".encode(), 1, ctypes.byref(status))  # JackNoStartServer
    client = jack.Client(f"{BENCH_CLIENTS}capture", no_start_server=True)
    ports = [p for p in client.get_ports(is_audio=True, is_output=True)
             if not p.name.startswith(("system:", f"{REFERENCE}:", BENCH_CLIENTS))]
    ready = os.fdopen(int(ready_fd), "w")
    if not ports or not clock:
        ready.write("no show ports\n" if not ports else "no clock client\n")
        ready.close()
        return
    capacity = int((float(seconds) + 5) * RATE / PERIOD)
    audio = np.zeros((capacity, PERIOD), dtype=np.float32)
    frames, usecs = np.zeros(capacity, dtype=np.int64), np.zeros(capacity, dtype=np.int64)
    woke = np.zeros(capacity)  # time.monotonic() in each callback, just after its frame: checks the conversion
    inputs = [client.inports.register(f"in_{i}") for i in range(len(ports))]
    count = [0]
    to_time = libjack.jack_frames_to_time

    def process(_: int) -> None:
        i = count[0]
        if i < capacity:
            frame = client.last_frame_time  # first: the engine's frame timer moves on at the next cycle
            woke[i] = time.monotonic()
            row = audio[i]
            row[:] = inputs[0].get_array()
            for port in inputs[1:]:
                row += port.get_array()
            frames[i], usecs[i] = frame, to_time(clock, frame)
            count[0] = i + 1

    client.set_process_callback(process)
    clocks = [_clock_offset(libjack.jack_get_time)]
    offset_s = clocks[0][1] / 1e6
    osc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target = ("127.0.0.1", int(port))
    on, off = (encode_message("/synth/note", [PROBE_NOTE, v]) for v in (PROBE_VELOCITY, 0.0))
    try:
        midi = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, f"{BENCH_CLIENTS}probe")
        midi.open_virtual_port("notes")
    except rtmidi.RtMidiError:
        midi = None
    velocity = round(PROBE_VELOCITY * 127)

    def send(kind: str, down: bool) -> None:
        if kind == "osc":
            osc.sendto(on if down else off, target)
        else:
            midi.send_message([0x90, PROBE_NOTE, velocity] if down else [0x80, PROBE_NOTE, 0])

    def sounded_since(sent: float, floor: float) -> bool:
        n = count[0]
        recent = slice(max(n - 32, 0), n)
        newer = (usecs[recent] / 1e6 - offset_s + PERIOD / RATE) > sent
        return bool(newer.any() and np.abs(audio[recent][newer]).max() > floor)

    rng, notes = random.Random(1), []
    with client:
        for source, sink in zip(ports, inputs):
            client.connect(source, sink)
        ready.write("ready " + " ".join(p.name for p in ports) + "\n")
        ready.close()
        start = time.monotonic()
        time.sleep(PROBE_WARMUP_S)
        kind = "osc"
        while time.monotonic() - start < float(seconds) - max(PROBE_EVERY_S):
            if kind == "midi" and midi is None:
                kind = "osc"
            n = count[0]
            tail = float(np.abs(audio[max(n - 8, 0):n]).max()) if n else 0.0
            sent = time.monotonic()
            send(kind, True)
            notes.append((kind == "midi", sent, time.monotonic()))
            time.sleep(PROBE_HOLD_S)
            send(kind, False)
            while not sounded_since(sent, max(ONSET_FLOOR, 3 * tail)) and time.monotonic() - sent < ONSET_WINDOW_S:
                time.sleep(0.005)
            time.sleep(max(sent + rng.uniform(*PROBE_EVERY_S) - time.monotonic(), 0.05))
            kind = "midi" if kind == "osc" else "osc"
        time.sleep(ONSET_WINDOW_S)  # the last note's onset
    clocks.append(_clock_offset(libjack.jack_get_time))
    libjack.jack_client_close(clock)
    if midi is not None:
        midi.close_port()
    n = count[0]
    np.savez(out, audio=audio[:n], frames=frames[:n], usecs=usecs[:n], woke=woke[:n], clocks=np.array(clocks),
             notes=np.array(notes, dtype=np.float64).reshape(-1, 3), midi=midi is not None)


def _clock_offset(jack_get_time: Callable[[], int]) -> tuple[float, float, float]:
    """(time.monotonic() in s, jack_get_time() - time.monotonic() in µs, the bracket in µs): the tightest of many
    jack_get_time() reads bracketed by two time.monotonic_ns() reads."""
    reads = []
    for _ in range(200):
        before = time.monotonic_ns()
        jack_us = jack_get_time()
        after = time.monotonic_ns()
        reads.append((after - before, jack_us - (before + after) / 2000, (before + after) / 2e9))
    bracket, offset, at = min(reads)
    return at, offset, bracket / 1000


def _hog(seconds: str) -> None:
    """A busy neighbour: a pure-Python loop at normal priority for `seconds`."""
    end = time.monotonic() + float(seconds)
    while time.monotonic() < end:
        sum(range(1000))


ROLES = {"storm": _storm, "probe": _probe, "hog": _hog}

if __name__ == "__main__":
    ROLES[sys.argv[1]](*sys.argv[2:])
