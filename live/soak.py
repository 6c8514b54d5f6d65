"""`live soak SHOW --minutes N`: play a show for a long time while faults are injected on a timetable, measure it
every second, and say whether it stayed healthy against the goals for an unattended hour.

The show plays as a child `live run` (no window, no recording) on a JACK server of the soak's own (dummy backend,
a unique name), so the soak can kill and restart it without touching anyone's audio. Its camera is a FIFO that an
FFmpeg writer feeds (the `--source` video file looped, or FFmpeg's test pattern), so the source can be lost and
come back. The faults, cycled in this order:

    source  the FIFO's writer killed, restarted a moment later        (the show's built-in source fills in)
    audio   jackd SIGKILLed, restarted a moment later                 (the engine goes silent, then is back)
    reload  an invalid show file saved, then the good one again       (the running show plays on)
    osc     a burst of fuzzed and valid-but-wrong OSC datagrams       (counted and rejected; it still answers)
    model   [video] model rewritten to another model and back         (applied, or "restart the show to apply")

A fault's window runs from its injection to SETTLE_S after it recovered; dropped frames are also counted outside
every window. Measured each second: the show's process tree's RSS, threads and open files (psutil), its watchdog
pings (systemd's notify protocol, one a second while frames go out), and, where the show serves them, its
Prometheus metrics (`[status]` port: frames, drops, latency, underruns). A show that dies is started again and
counted as a crash.
"""

from __future__ import annotations

import os
import random
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
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil

from live.bench import OscFuzzer
from live.bench_audio import Children, TimedLines, query_status, start_jack
from live.errors import LiveError

KINDS = ("source", "audio", "reload", "osc", "model")
#: The issue's goals for one hour: (report key, limit, what it means).
GOALS = (("crashes", 0, "crashes"), ("faults_not_recovered", 0, "faults not recovered"),
         ("rss_growth_pct", 1.0, "RSS growth %"),
         ("latency_p95_drift_pct", 5.0, "latency p95 drift %"),
         ("dropped_outside_faults_pct", 0.1, "dropped frames % outside fault windows"))
EVERY_S = (20.0, 30.0)  # a fault every this many seconds in a long run (random within; shorter runs pack them)
SETTLE_S = 3.0  # a fault's window lasts this long after it recovered
RECOVER_S = 20.0  # a fault not recovered by then is reported as not recovered
DOWN_S = 2.0  # how long the source and the JACK server stay away
FUZZ_PACKETS = 2000  # datagrams per OSC fault
START_S = 180.0  # the show loads its models before it plays
STOP_S = 30.0
#: The model fault's other model: the show's model's fp16 twin (or the full-precision one), where there is one (the
#: same styles, so the save plays), else the first of these that is not the show's.
SWAP_MODELS = ("styles-procedural.json", "styles-cpu.json")
MIN_S = 30.0  # the shortest soak: every kind of fault, each with time to recover
SHOW_LINES = 60  # the show's last lines kept in the report
_PLAYED = re.compile(r"Played ([\d.]+) s: (\d+) frames, ([\d.]+) fps, latency p50 ([\d.]+) ms / p95 ([\d.]+) ms, "
                     r"(\d+) dropped")
_STARVED = re.compile(r"starved (\d+)x")


def warmup_s(seconds: float) -> float:
    """Before the start figures are taken: a fifth of the run, at least 30 s where the run is long enough (a
    quarter of a short one)."""
    return max(0.2 * seconds, min(30.0, 0.25 * seconds))


def timetable(seconds: float, kinds: tuple[str, ...], seed: int = 0) -> list[tuple[float, str]]:
    """(seconds after the start, kind) of each fault: from the warm-up's end to a tail kept clear for the last
    window, every EVERY_S in a long run, packed closer in a short one so every kind comes at least once."""
    rng = random.Random(seed)
    start, end = warmup_s(seconds), seconds - max(0.1 * seconds, 3.0)
    span = end - start
    every = min(sum(EVERY_S) / 2, span / max(1, len(kinds)))
    table, at, i = [], start, 0
    while at < end - 1e-6 and kinds:
        table.append((at, kinds[i % len(kinds)]))
        i += 1
        at = start + i * every + (rng.uniform(EVERY_S[0], EVERY_S[1]) - every if every >= EVERY_S[0] else 0.0)
    return table


def soak_show(show_path: Path, folder: Path, source: str, osc_port: int, status_port: int) -> tuple[Path, dict]:
    """A copy of the show as the soak plays it: its camera `source`, OSC on `osc_port` from this machine, audio (if
    on) to JACK's "system", no window or recording, `[status]` (its /metrics) on `status_port`; model paths made
    absolute. Returns its path and its data."""
    import tomli_w

    try:
        data = tomllib.loads(show_path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise LiveError(f"{show_path}: cannot read it as a show ({err})",
                        "give a show file, e.g. show_configs/default.toml")
    watch = data.get("watch", {})
    for table, key in ((data.get("video", {}), "model"), (data.get("audio", {}), "model"), (watch, "face_model"),
                       (watch, "mask_model"), *((stage, "model") for stage in data.get("stages", []))):
        if isinstance(table.get(key), str) and table[key]:
            table[key] = str((show_path.parent / table[key]).resolve())
    data.setdefault("video", {})["source"] = source
    if data.get("audio", {}).get("enabled", True):
        data.setdefault("audio", {})["device"] = "system"
    data["osc"] = {**data.get("osc", {}), "enabled": True, "host": "127.0.0.1", "port": osc_port, "allow": []}
    data["oscquery"] = {**data.get("oscquery", {}), "port": 0, "zeroconf": False}
    data["outputs"] = [o for o in data.get("outputs", []) if o.get("kind") not in ("window", "record")]
    data["status"] = {**data.get("status", {}), "port": status_port, "bind": "127.0.0.1"}  # its /metrics
    path = folder / show_path.name
    path.write_text(tomli_w.dumps(data))
    return path, data


def read_metrics(port: int, timeout: float = 0.5) -> dict[str, float] | None:
    """The show's Prometheus metrics that the soak reads, by name (the latency histogram as its sum and count);
    None when nothing answers."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as reply:
            text = reply.read().decode()
    except (OSError, ValueError):
        return None
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "live_latency_recent_seconds" and sample.labels.get("quantile") == "0.95":
                out["latency_p95_s"] = sample.value
            elif sample.name in ("live_frames_total", "live_frames_dropped_total", "live_fps",
                                 "live_audio_underruns_total", "live_restarts_total", "live_uptime_seconds",
                                 "live_latency_seconds_sum", "live_latency_seconds_count"):
                out[sample.name] = sample.value
    return out


def tree_figures(pid: int) -> dict[str, Any] | None:
    """RSS (MB), threads and open files of a process and its children (the synth's render process, a window), and
    each one's RSS by name ("show", "render_process", "window", "ffmpeg"), so growth can be pinned on one; None if
    the show is gone."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    rss = threads = fds = 0
    by_process: dict[str, float] = {}
    for proc in procs:
        try:
            with proc.oneshot():
                mine = proc.memory_info().rss
                threads += proc.num_threads()
                fds += proc.num_fds()
                name = "show" if proc is root else process_name(proc.cmdline())
        except psutil.Error:
            continue
        rss += mine
        by_process[name] = round(by_process.get(name, 0.0) + mine / 2**20, 1)
    return {"rss_mb": rss / 2**20, "threads": threads, "fds": fds, "rss_by_process": by_process}


def process_name(cmdline: list[str]) -> str:
    """A child's name for the report: the module a Python child runs (`-m live.audio.render_process` gives
    "render_process"), else its program's name."""
    if "-m" in cmdline[:-1]:
        return cmdline[cmdline.index("-m") + 1].rsplit(".", 1)[-1]
    return Path(cmdline[0]).name if cmdline else "?"


class Soak:
    """One soak run; `run()` returns the report (see `report`)."""

    def __init__(self, show_path: Path, seconds: float, source: str | None = None, swap_model: str | None = None,
                 say: Callable[[str], None] = print, faults: tuple[str, ...] = KINDS) -> None:
        """`faults`: the kinds to inject (default all), to pin a leak or a failure on one kind."""
        unknown = [k for k in faults if k not in KINDS]
        if unknown or not faults:
            raise LiveError(f"--faults {','.join(faults)}: {', '.join(unknown) or 'none given'} is not a fault kind",
                            f"give some of {','.join(KINDS)}")
        if seconds < MIN_S:
            raise LiveError(f"{seconds:g} s is too short for a soak: each fault kind needs a few seconds to recover",
                            f"give at least {MIN_S:g} s, e.g. --minutes 60")
        self.show_path, self.seconds, self.say = show_path, seconds, say
        self.user_source, self.swap_model, self.kinds = source, swap_model, faults
        self.samples: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []
        self.crashes: list[dict[str, Any]] = []
        self.runs: list[str] = []  # each child run's last "Played ..." line
        self.show: subprocess.Popen | None = None
        self.writer: subprocess.Popen | None = None  # FFmpeg feeding the camera FIFO
        self.fifo: Path | None = None
        self._writer_lock = threading.Lock()  # the fault thread and the sampler (after a crash) both restart it
        self.lines: TimedLines | None = None
        self._stopping = threading.Event()

    # ------------------------------------------------------------------------------------------------ set-up

    def _tools(self) -> None:
        missing = [tool for tool in ("jackd", "jack_lsp", "ffmpeg") if shutil.which(tool) is None]
        if missing:
            raise LiveError(f"live soak needs {', '.join(missing)}, which is not installed",
                            "install them: `make test`, or apt-get install jackd2 ffmpeg")

    def _writer_args(self, fifo: Path) -> list[str]:
        """FFmpeg feeding the FIFO at real time: the user's video file looped, or FFmpeg's test pattern."""
        src = self.user_source
        if src in (None, "builtin"):
            feed = ["-f", "lavfi", "-i", "testsrc2=s=640x480:r=30"]
        else:
            feed = ["-stream_loop", "-1", "-i", str(Path(src).resolve())]
        return ["ffmpeg", "-v", "error", "-nostdin", "-re", *feed, "-f", "yuv4mpegpipe", "-pix_fmt", "yuv420p",
                "-y", str(fifo)]

    def _start_show(self) -> None:
        self.show = self.children.start([sys.executable, "-m", "live", "run", str(self.copy), "--no-window"],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = TimedLines(self.show.stdout, keep=20_000, skip="Jack: ")
        deadline = time.monotonic() + START_S
        while not self.lines.find("Playing"):
            if self.show.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.2)
                raise LiveError("the show did not start: " + " / ".join(self.lines.last(4)),
                                f"run `live run {self.show_path}` by itself to see why")
            time.sleep(0.1)

    def _said_since(self, text: str | tuple[str, ...], since: float, timeout: float) -> float | None:
        """When the show said a line containing `text` (or one of them) after `since` (monotonic), waiting up to
        `timeout`."""
        hit = self._line_since(text, since, timeout)
        return hit[0] if hit else None

    def _line_since(self, text: str | tuple[str, ...], since: float, timeout: float) -> tuple[float, str] | None:
        """(when, line): the show's first line containing `text` (or one of them) after `since`, waiting up to
        `timeout`."""
        texts = (text,) if isinstance(text, str) else text
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines
            hit = next(((at, line) for at, line in list(lines.lines)
                        if at >= since and any(t in line for t in texts)), None) if lines else None
            if hit is not None or time.monotonic() > deadline or self._stopping.is_set():
                return hit
            time.sleep(0.05)

    # -------------------------------------------------------------------------------------------------- faults

    def _source(self) -> tuple[float | None, str]:
        with self._writer_lock:
            self.children.stop(self.writer, signal.SIGKILL)
        time.sleep(DOWN_S)
        restarted = time.monotonic()
        self._restart_writer()
        # "is back", or "plays" from a show that was started again meanwhile
        return self._said_since(("is back", f"'{self.fifo}' plays"), restarted, RECOVER_S), f"writer away {DOWN_S:g} s"

    def _restart_writer(self) -> None:
        """Start the FIFO's writer again if it is not running; one writer at most (two would interleave frames)."""
        with self._writer_lock:
            if self.writer is not None and self.writer.poll() is not None:
                self.children.stop(self.writer)
                self.writer = self.children.start(self._writer_args(self.fifo))

    def _audio(self) -> tuple[float | None, str]:
        jack = self.jack
        jack.kill()
        jack.wait()
        self.children.stop(jack)
        time.sleep(DOWN_S)
        restarted = time.monotonic()
        start_jack(self.children, self.jack_name)
        self.jack = self.children.procs[-1]
        return self._said_since("is back after", restarted, RECOVER_S), f"jackd away {DOWN_S:g} s"

    def _reload(self) -> tuple[float | None, str]:
        bad = self.count["reload"] % 2 == 0
        broken = self.good + ("\n[video\n" if bad else "\n[video_typo]\nnot_a_key = 1\n")
        saved = time.monotonic()
        self.copy.write_text(broken)
        refused = self._said_since("saved but not applied", saved, RECOVER_S)
        restored = time.monotonic()
        self.copy.write_text(self.good)
        back = self._said_since("Show: reloaded", restored, RECOVER_S)
        what = "TOML syntax error" if bad else "unknown section"
        return (back if refused is not None else None), f"{what}: {'refused' if refused else 'NOT refused'}"

    def _osc(self) -> tuple[float | None, str]:
        before = query_status(self.osc_port) or {"osc": {}}
        fuzzer = OscFuzzer(seed=len(self.faults))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for i in range(FUZZ_PACKETS):
                sock.sendto(fuzzer.next()[0], ("127.0.0.1", self.osc_port))
                if i % 50 == 49:
                    time.sleep(0.005)  # a burst the kernel's buffer takes, not a flood it drops
        after = query_status(self.osc_port, timeout=2.0)
        if after is None:
            return None, f"{FUZZ_PACKETS} datagrams; no answer to /live/status after"
        rejected = after["osc"].get("rejected", 0) - before["osc"].get("rejected", 0)
        return time.monotonic(), f"{FUZZ_PACKETS} datagrams, {rejected} rejected"

    def _model(self) -> tuple[float | None, str]:
        video = self.data.get("video", {})
        mine = Path(str(video.get("model", ""))).name
        shipped = Path(__file__).resolve().parent.parent / "exported_models"
        twins = (mine.replace(".json", "-fp16.json"), mine.replace("-fp16.json", ".json"))
        other = self.swap_model or next(m for m in (*twins, *SWAP_MODELS) if m != mine and (shipped / m).is_file())
        other_path = Path(other) if Path(other).is_absolute() else shipped / Path(other).name
        swapped = self._video_model(other_path)
        played = ("[video] now plays", "[video] not applied")  # the swap thread's word, once the model is open
        at = time.monotonic()
        self.copy.write_text(swapped)
        there = self._line_since("Show: reloaded", at, RECOVER_S)
        swap = self._line_since(played, at, RECOVER_S) if there and "opening beside" in there[1] else None
        at = time.monotonic()
        self.copy.write_text(self.good)
        back = self._said_since(played if swap else "Show: reloaded", at, RECOVER_S)
        how = ("not reloaded" if there is None else "restart to apply" if "restart" in there[1] else
               "not swapped: no word from the swap" if swap is None else
               "swapped and back" if "now plays" in swap[1] else "refused, the running one played on")
        return (back if there is not None else None), f"{mine} -> {other_path.name} -> {mine} ({how})"

    def _video_model(self, model: Path) -> str:
        import tomli_w

        data = tomllib.loads(self.good)
        data["video"]["model"] = str(model)
        return tomli_w.dumps(data)

    # -------------------------------------------------------------------------------------------- measuring

    def _sample_loop(self, notify: socket.socket) -> None:
        while not self._stopping.wait(1.0):
            now = time.monotonic()
            pings = 0
            while True:
                try:
                    if b"WATCHDOG=1" in notify.recv(4096):
                        pings += 1
                except BlockingIOError:
                    break
            show = self.show
            if show is not None and show.poll() is not None and not self._stopping.is_set():
                self._crashed(show, now)
                continue
            figures = tree_figures(show.pid) if show else None
            metrics = read_metrics(self.status_port) if self.status_port else None
            self.samples.append({"t": now - self.started, "pings": pings, **(figures or {}),
                                 **({"metrics": metrics} if metrics else {})})

    def _crashed(self, show: subprocess.Popen, now: float) -> None:
        tail = self.lines.last(6) if self.lines else []
        self.crashes.append({"at": round(now - self.started, 1), "code": show.returncode, "last_lines": tail})
        self.say(f"soak: the show died (exit code {show.returncode}) at {now - self.started:.0f} s; starting it "
                 f"again. Its last lines: {' / '.join(tail)}")
        played = next((line for line in reversed(tail) if "Played " in line), None)
        if played:
            self.runs.append(played)
        self.children.stop(show)
        self._restart_writer()  # the FIFO's reader died with the show, and so did its writer
        try:
            self._start_show()
        except LiveError as err:
            self.say(f"soak: {err}")

    # ------------------------------------------------------------------------------------------------- the run

    def run(self) -> dict[str, Any]:
        self._tools()
        with tempfile.TemporaryDirectory(prefix="live-soak-") as temp, ExitStack() as stack:
            folder = Path(temp)
            self.jack_name = f"live-soak-{os.getpid()}"
            notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            notify.bind(str(folder / "notify"))
            notify.setblocking(False)
            stack.callback(notify.close)
            env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
            env.update(JACK_DEFAULT_SERVER=self.jack_name, JACK_NO_START_SERVER="1", PYTHONUNBUFFERED="1",
                       NOTIFY_SOCKET=str(folder / "notify"))
            self.children = Children(env, self.say)
            stack.callback(self.children.close)
            start_jack(self.children, self.jack_name)
            self.jack = self.children.procs[-1]
            kinds = list(self.kinds)
            src = self.user_source
            if src in (None, "builtin") or Path(src).is_file():
                self.fifo = folder / "camera.fifo"
                os.mkfifo(self.fifo)
                self.writer = self.children.start(self._writer_args(self.fifo))
                source = str(self.fifo)
            elif "source" in kinds:  # a camera or a stream the soak cannot take away
                kinds.remove("source")
                source = src
            self.osc_port, status_port = _free_port(socket.SOCK_DGRAM), _free_port(socket.SOCK_STREAM)
            self.copy, self.data = soak_show(self.show_path, folder, source, self.osc_port, status_port)
            self.status_port = status_port
            if not self.data.get("audio", {}).get("enabled", True) and "audio" in kinds:
                kinds.remove("audio")
            self.good = self.copy.read_text()
            self.count = dict.fromkeys(KINDS, 0)
            self.say(f"soak: {self.show_path.name} for {self.seconds:g} s on JACK server {self.jack_name}; faults: "
                     f"{', '.join(kinds)}")
            self._start_show()
            self.started = time.monotonic()
            sampler = threading.Thread(target=self._sample_loop, args=(notify,), name="soak-sampler", daemon=True)
            sampler.start()
            try:
                for at, kind in timetable(self.seconds, tuple(kinds)):
                    self._wait(at)
                    self._inject(kind)
                self._wait(self.seconds)
            except KeyboardInterrupt:  # Ctrl-C reaches the soak alone (its children run in sessions of their own)
                self.seconds = time.monotonic() - self.started
                self.say(f"soak: stopped after {self.seconds:.0f} s; the report covers that")
            finally:
                self._stopping.set()
                sampler.join(5.0)
                self._stop_show()
        return self.report(kinds)

    def _wait(self, at: float) -> None:
        delay = self.started + at - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def _inject(self, kind: str) -> None:
        at = time.monotonic()
        try:
            recovered, note = getattr(self, f"_{kind}")()
        except (OSError, LiveError) as err:
            recovered, note = None, f"could not inject: {err}"
        self.count[kind] += 1
        end = (recovered if recovered is not None else time.monotonic()) + SETTLE_S
        fault = {"kind": kind, "at": round(at - self.started, 2),
                 "recovered_s": None if recovered is None else round(recovered - at, 2),
                 "window": [round(at - self.started, 2), round(end - self.started, 2)], "note": note}
        self.faults.append(fault)
        rec = "not recovered" if recovered is None else f"recovered in {recovered - at:.1f} s"
        self.say(f"soak: {fault['at']:6.1f} s  {kind:<6} {rec}; {note}")

    def _stop_show(self) -> None:
        show = self.show
        if show is None:
            return
        self.children.stop(show, timeout=STOP_S)
        self.lines.wait(5.0)
        played = self.lines.find("Played ")
        if played:
            self.runs.append(played[played.find("Played "):])

    # ---------------------------------------------------------------------------------------------- the report

    def report(self, kinds: list[str]) -> dict[str, Any]:
        seconds, samples = self.seconds, [s for s in self.samples if "rss_mb" in s]
        warm = warmup_s(seconds)
        windows = [f["window"] for f in self.faults]

        def in_fault(t: float) -> bool:
            return any(a <= t <= b + 1.0 for a, b in windows)  # +1: a sample covers the second before it

        start = next((s for s in samples if s["t"] >= warm), samples[0] if samples else None)
        end = samples[-1] if samples else None
        growth = None
        if start and end and start["rss_mb"]:
            growth = round(100 * (end["rss_mb"] - start["rss_mb"]) / start["rss_mb"], 2)
        after = [s for s in samples if s["t"] >= warm] or samples

        def span(key: str) -> dict:
            return {"start": start[key] if start else None, "end": end[key] if end else None,
                    "max": max((s[key] for s in after), default=None)}

        quarters = [[s for s in self.samples if q * seconds / 4 <= s["t"] < (q + 1) * seconds / 4 + 1]
                    for q in range(4)]
        metered = [s for s in self.samples if "metrics" in s]
        runs = [_PLAYED.search(line) for line in self.runs]
        runs = [m for m in runs if m]
        frames = sum(int(m.group(2)) for m in runs)
        dropped = sum(int(m.group(6)) for m in runs)
        underruns = sum(int(m.group(1)) for line in self.runs for m in [_STARVED.search(line)] if m) \
            if any(_STARVED.search(line) for line in self.runs) else None
        p95_overall = max((float(m.group(5)) for m in runs), default=None)
        first = last = drift = outside_pct = None
        outside = None
        if metered:
            m1 = metered[-1]["metrics"]
            frames = int(counted(metered, "live_frames_total", frames))
            dropped = int(counted(metered, "live_frames_dropped_total", dropped))
            if "live_audio_underruns_total" in m1:
                underruns = int(counted(metered, "live_audio_underruns_total", 0))
            window = max(0.1 * seconds, 5.0)

            def p95(lo: float, hi: float) -> float | None:
                got = [s["metrics"]["latency_p95_s"] * 1000 for s in metered
                       if lo <= s["t"] <= hi and "latency_p95_s" in s["metrics"]]
                clear = [v for s, v in zip(metered, got) if not in_fault(s["t"])]
                vals = sorted(clear or got)
                return round(vals[len(vals) // 2], 2) if vals else None  # the window's median of the recent p95

            first, last = p95(warm, warm + window), p95(seconds - window, seconds + 1)
            if first and last:
                drift = round(100 * (last - first) / first, 2)
            outside = 0
            shown = 0
            for prev, cur in zip(metered, metered[1:]):
                d = cur["metrics"].get("live_frames_dropped_total", 0) - prev["metrics"].get(
                    "live_frames_dropped_total", 0)
                f = cur["metrics"].get("live_frames_total", 0) - prev["metrics"].get("live_frames_total", 0)
                if d >= 0 and f >= 0 and not in_fault(cur["t"]):
                    outside += d
                    shown += f + d
            outside_pct = round(100 * outside / shown, 3) if shown else None
        report: dict[str, Any] = {
            "show": str(self.show_path), "seconds": seconds, "warmup_s": round(warm, 1),
            "measured_by": "psutil, watchdog pings, Prometheus" if metered else
            "psutil, watchdog pings, the show's summary line (no [status] metrics)",
            "faults": {k: self.count.get(k, 0) for k in KINDS},
            "faults_recovered": {k: sum(1 for f in self.faults if f["kind"] == k and f["recovered_s"] is not None)
                                 for k in KINDS},
            "faults_not_recovered": sum(1 for f in self.faults if f["recovered_s"] is None),
            "faults_skipped": [k for k in KINDS if k not in kinds],
            "fault_log": self.faults,
            "crashes": len(self.crashes), "crash_log": self.crashes,
            "rss_mb": {"start": round(start["rss_mb"], 1) if start else None,
                       "end": round(end["rss_mb"], 1) if end else None},
            "rss_growth_pct": growth,
            "rss_mb_by_process": {name: {"start": start["rss_by_process"].get(name), "end": mb}
                                  for name, mb in end["rss_by_process"].items()} if start and end else {},
            "rss_mb_by_minute": [s["rss_mb"] and round(s["rss_mb"], 1) for s in samples[::60]],
            "threads": span("threads"), "fds": span("fds"),
            "latency_p95_ms": {"first": first, "last": last, "overall": p95_overall},
            "latency_p95_drift_pct": drift,
            "frames": frames, "dropped": dropped,
            "dropped_pct": round(100 * dropped / (frames + dropped), 3) if frames + dropped else None,
            "dropped_outside_faults": outside, "dropped_outside_faults_pct": outside_pct,
            "audio_underruns": underruns,
            "playing_s_by_quarter": [sum(1 for s in q if s.get("pings")) for q in quarters],
            "frames_by_quarter": [int(q[-1]["metrics"].get("live_frames_total", 0)
                                      - q[0]["metrics"].get("live_frames_total", 0))
                                  if len(q := [s for s in qs if "metrics" in s]) > 1 else None for qs in quarters],
            "samples": len(self.samples),
            "show_lines": self.lines.last(SHOW_LINES) if self.lines else [],
        }
        report["goals"] = {key: {"limit": limit, "value": report[key],
                                 "pass": None if report[key] is None else report[key] <= limit}
                           for key, limit, _ in GOALS}
        report["pass"] = all(g["pass"] is not False for g in report["goals"].values())
        return report


def counted(samples: list[dict[str, Any]], name: str, default: float) -> float:
    """A Prometheus counter's total over the run, across restarts of the show (each starts it again at 0)."""
    values = [s["metrics"][name] for s in samples if name in s["metrics"]]
    if not values:
        return default
    return values[0] + sum(b - a if b >= a else b for a, b in zip(values, values[1:]))


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def print_report(r: dict[str, Any], print_: Callable[[str], None] = print) -> None:
    def num(value, spec: str = "g", unit: str = "") -> str:
        return "n/a" if value is None else f"{value:{spec}}{unit}"

    faults = ", ".join(f"{k} {n}" + (f" ({r['faults_recovered'][k]} recovered)" if n != r["faults_recovered"][k]
                                     else "") for k, n in r["faults"].items() if n)
    rows = [
        ("duration", f"{r['seconds']:g} s (warm-up {r['warmup_s']:g} s); measured by {r['measured_by']}"),
        ("faults", (faults or "none") + (f"; skipped {', '.join(r['faults_skipped'])}" if r["faults_skipped"] else "")),
        ("crashes", str(r["crashes"])),
        ("RSS", f"{num(r['rss_mb']['start'], '.1f')} -> {num(r['rss_mb']['end'], '.1f')} MB "
                f"({num(r['rss_growth_pct'], '+.2f', ' %')})"),
        ("RSS by process", ", ".join(f"{name} {num(mb['start'], '.1f')} -> {num(mb['end'], '.1f')}"
                                     for name, mb in r["rss_mb_by_process"].items()) or "n/a"),
        ("threads", f"{num(r['threads']['start'])} -> {num(r['threads']['end'])} (max {num(r['threads']['max'])})"),
        ("open files", f"{num(r['fds']['start'])} -> {num(r['fds']['end'])} (max {num(r['fds']['max'])})"),
        ("latency p95", f"first {num(r['latency_p95_ms']['first'], '.1f', ' ms')}, last "
                        f"{num(r['latency_p95_ms']['last'], '.1f', ' ms')} "
                        f"(drift {num(r['latency_p95_drift_pct'], '+.1f', ' %')}); whole run "
                        f"{num(r['latency_p95_ms']['overall'], '.1f', ' ms')}"),
        ("frames", f"{r['frames']}, {r['dropped']} dropped ({num(r['dropped_pct'], '.3f', ' %')}); outside fault "
                   f"windows {num(r['dropped_outside_faults'])} ({num(r['dropped_outside_faults_pct'], '.3f', ' %')})"),
        ("playing", "seconds with frames out per quarter: " + " / ".join(map(str, r["playing_s_by_quarter"]))),
        ("audio underruns", num(r["audio_underruns"])),
    ]
    print_("\n".join(f"  {name:<16}{value}" for name, value in rows))
    for key, limit, what in GOALS:
        goal = r["goals"][key]
        verdict = "n/a " if goal["pass"] is None else "PASS" if goal["pass"] else "FAIL"
        print_(f"  {verdict}  {what}: {num(goal['value'])} (goal for one hour: <= {limit:g})")
    print_("soak: " + ("PASS" if r["pass"] else "FAIL") + " against the goals for one hour")
