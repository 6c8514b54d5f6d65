"""`live doctor`: what this machine really offers a show, each problem with its fix.

Everything is checked by trying it (making an ONNX Runtime session, opening a camera), not by listing names.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from live.inference import PROVIDERS, open_session
from live.stdio import captured_output


def _tiny_model(folder: Path) -> Path:
    """A one-node model: enough to prove a provider can build and run a session."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = folder / "probe.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return path


def check_providers(say: Callable[[str], None]) -> list[str]:
    problems = []
    say(f"ONNX Runtime {ort.__version__} ({ort.get_device()} build)")
    with tempfile.TemporaryDirectory() as folder:
        model = _tiny_model(Path(folder))
        for short in PROVIDERS:
            session = open_session(model, (short,))
            if session.provider == short:
                say(f"  ok    {short}: a session runs")
            else:
                why = session.fallback.split(";")[0]
                fix = f"install the libraries named, in the versions onnxruntime-gpu {ort.__version__} was built " \
                      "for (its GPU requirements page); shows play on CPU meanwhile"
                say(f"  --    {short}: {why}\n          fix: {fix}")
                problems.append(short)
    return problems


def check_cameras(say: Callable[[str], None], indexes: range = range(4)) -> list[str]:
    from live.video.capture import open_opencv

    found = []
    for index in indexes:
        source, _ = open_opencv(index, 640, 480)
        if source:
            w, h = int(source.cap.get(3)), int(source.cap.get(4))
            found.append(f"camera {index} ({w}x{h})")
            source.close()
    if found:
        say("Cameras: " + ", ".join(found))
        return []
    say("Cameras: none found (tried indexes 0-3)\n          fix: connect a camera, or play a file/URL with "
        "--source; shows fall back to the built-in animated source")
    return ["camera"]


def check_audio(say: Callable[[str], None]) -> list[str]:
    from live.audio import devices

    lines = devices.describe()
    say("Audio:\n  " + "\n  ".join(lines))
    if not devices.list_outputs():
        say("  no output devices\n          fix: connect a sound card, or start JACK; shows run silent without one")
        return ["audio"]
    return []


def check_realtime(say: Callable[[str], None]) -> list[str]:
    """Whether the synth's render process can run at real-time priority (SCHED_FIFO), which is what keeps its sound
    unbroken beside a busy show or a busy neighbour (issue 11 measured it: without it, a loaded machine starves)."""
    from live.audio.render_process import RT_PRIORITY, realtime_granted
    from live.control.priority import CONTROL_RT_PRIORITY

    if realtime_granted():
        say(f"Real-time priority: granted (the synth renders at SCHED_FIFO {RT_PRIORITY}, OSC and MIDI are read at "
            f"{CONTROL_RT_PRIORITY})")
        return []
    say("Real-time priority: NOT granted, so a loaded machine can starve the synth (silent gaps) and delay notes\n"
        "          fix: add your user to the 'audio' group with an rtprio limit (e.g. /etc/security/limits.d/"
        "audio.conf: '@audio - rtprio 95', then log in again), or install rtkit")
    return ["realtime"]


def check_midi(say: Callable[[str], None]) -> list[str]:
    """MIDI ports through every rtmidi API compiled in (ALSA and JACK on Linux, CoreMIDI, Windows MM)."""
    import mido

    errors, found = [], False
    for api in mido.Backend("mido.backends.rtmidi").module.get_api_names():
        backend = mido.Backend(f"mido.backends.rtmidi/{api}")
        try:
            with captured_output():  # ALSA's library prints to stderr when /dev/snd/seq is missing
                inputs, outputs = backend.get_input_names(), backend.get_output_names()
        except Exception as err:  # rtmidi raises SystemError or its own types when an API is unreachable
            errors.append(f"{api}: {str(err).strip()}")
            continue
        found = True
        say(f"MIDI ({api}): inputs {inputs or 'none'}; outputs {outputs or 'none'}")
    if not found:
        say("MIDI: unavailable (" + "; ".join(errors) + ")\n          fix: on Linux load the ALSA sequencer "
            "(modprobe snd-seq) or run a JACK server")
        return ["midi"]
    return []


def check_display(say: Callable[[str], None]) -> list[str]:
    from live.video.output import has_display
    from live.video.window import monitor_origin

    if not has_display():
        say("Display: none (DISPLAY/WAYLAND_DISPLAY unset)\n          fix: run on the machine's desktop, or "
            "shows record to recordings/ instead")
        return ["display"]
    origin = monitor_origin(0)
    say("Display: ok" + (f", monitor 0 at {origin[0]},{origin[1]} {origin[2]}x{origin[3]}" if origin else ""))
    return []


def report(say: Callable[[str], None] = print) -> list[str]:
    """Run every check; returns the names of the things missing."""
    problems: list[str] = []
    for check in (check_providers, check_cameras, check_audio, check_realtime, check_midi, check_display):
        problems += check(say)
    say(f"{len(problems)} missing: {', '.join(problems)}" if problems else "Everything a show needs is here.")
    return problems
