"""The rest of the band for tests/test_music_live.py, in a process of its own: a JACK client that sends MIDI (clock,
phrases) at exact frames into a show and records the show's audio and MIDI out with their frames.

Why a process: its process callback is Python, and in the test's own process it waited for the interpreter's lock
behind pytest's threads; on a loaded machine it missed cycles, and once JACK dropped it mid-callback, holding that
lock, and the test hung. Here nothing else wants the lock.

Run: python jack_band.py NAME SECONDS OUT.npz. It says "ready" once its ports are up, then reads lines on stdin:
a JSON {"origin": frame of the recording's first sample, "schedule": [[frame, hex bytes], ...]}, and "stop", after
which it writes OUT.npz and ends.
"""

from __future__ import annotations

import json
import sys

import jack
import numpy as np


def main(name: str, seconds: float, out: str) -> None:
    client = jack.Client(name, no_start_server=True)
    keys = client.midi_outports.register("keys")
    midi_in = client.midi_inports.register("fromshow")
    ear = client.inports.register("ear")
    audio = np.zeros(int(seconds * client.samplerate), np.float32)
    state = {"origin": None, "schedule": [], "sent": 0, "late": 0, "xruns": 0}
    written: list[int] = []
    heard: list[tuple[int, bytes]] = []

    def process(frames: int) -> None:
        now = client.last_frame_time
        origin = state["origin"]
        at = now - origin if origin is not None else -1
        if 0 <= at <= len(audio) - frames:
            audio[at:at + frames] = ear.get_array()
        keys.clear_buffer()
        schedule = state["schedule"]
        while state["sent"] < len(schedule) and schedule[state["sent"]][0] < now + frames:
            frame, data = schedule[state["sent"]]
            state["late"] += frame < now
            keys.write_midi_event(max(frame - now, 0), data)
            written.append(max(frame, now))
            state["sent"] += 1
        for offset, data in midi_in.incoming_midi_events():
            heard.append((now + offset, bytes(data)))

    def xrun(delayed_us: float) -> None:
        state["xruns"] += 1

    client.set_process_callback(process)
    client.set_xrun_callback(xrun)
    client.activate()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "stop":
            break
        plan = json.loads(line)
        state["schedule"] = [(frame, bytes.fromhex(data)) for frame, data in plan["schedule"]]
        state["origin"] = plan["origin"]
    client.deactivate()
    client.close()
    # what was heard: a row per message, its frame then its first three bytes (0 where shorter)
    rows = np.array([[frame, *data[:3].ljust(3, b"\0")] for frame, data in heard], np.int64).reshape(-1, 4)
    np.savez(out, audio=audio, heard=rows, written=np.array(written, np.int64), late=state["late"],
             xruns=state["xruns"])


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3])
