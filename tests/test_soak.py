"""Long runs, measured: `live soak` plays a show while it injects every kind of fault and reports whether it stayed
healthy; a display that goes away mid-show leaves the recording running."""

from __future__ import annotations

import json
import time

from fixtures_live import LiveProcess, decode_frames, free_port, headless_env, run_live, show_with, start_xvfb


def test_a_display_that_goes_away_leaves_the_recording_running(tmp_path, camera_file):
    server, display = start_xvfb()  # its own server (killed mid-show), never the session's
    out = tmp_path / "out.mp4"
    show = show_with(tmp_path, osc={"port": free_port()}, audio={"enabled": False})
    try:
        live = LiveProcess(["run", str(show), "--source", str(camera_file), "--record", str(out), "--for", "8"],
                           env=headless_env(DISPLAY=display))
        live.wait_for("Playing", timeout=60)
        playing = time.monotonic()
        time.sleep(2.0)
        server.kill()
        server.wait()
        killed = time.monotonic() - playing
        code, output = live.finish(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    print("\n" + output)
    assert code == 0, output
    assert "Traceback" not in output, output
    assert "Output: window 'live'" in output
    lost = [line for line in output.splitlines() if line.startswith("Output: window 'live' is gone")]
    assert len(lost) == 1 and "display went away" in lost[0] and "the show goes on" in lost[0], output
    times = [t for t, _ in decode_frames(out)]
    after = [t for t in times if t > killed + 1.0]
    print(f"recorded {len(times)} frames to {times[-1]:.1f} s, {len(after)} of them 1 s and more after the display "
          f"went away at {killed:.1f} s")
    assert times[-1] > killed + 4.0 and len(after) > 20, (killed, len(after), times[-1])


REPORT_KEYS = {"show", "seconds", "warmup_s", "measured_by", "faults", "faults_recovered", "faults_not_recovered",
               "faults_skipped",
               "fault_log", "crashes", "crash_log", "rss_mb", "rss_growth_pct", "rss_mb_by_process", "rss_mb_by_minute", "threads", "fds", "latency_p95_ms",
               "latency_p95_drift_pct", "frames", "dropped", "dropped_pct", "dropped_outside_faults",
               "dropped_outside_faults_pct", "audio_underruns", "playing_s_by_quarter", "frames_by_quarter",
               "samples", "show_lines", "goals", "pass"}


def test_a_short_soak_injects_every_fault_and_the_show_plays_through(tmp_path):
    """`live soak` for 40 s of a small show with the synth: each fault kind once, each recovered, no crash, frames
    out in every quarter, and no threads or open files left behind by the faults."""
    from live.soak import GOALS, KINDS

    show = show_with(tmp_path, osc={"port": free_port()}, stages=[])
    report_path = tmp_path / "soak.json"
    result = run_live(["soak", str(show), "--seconds", "40", "--json", str(report_path)], timeout=150)
    output = result.stdout + result.stderr
    print("\n" + output)
    assert result.returncode == 0 and "Traceback" not in output, output
    report = json.loads(report_path.read_text())
    lines = "\n".join(report["show_lines"])
    assert REPORT_KEYS <= set(report), REPORT_KEYS - set(report)
    assert all(report["faults"][kind] >= 1 for kind in KINDS), report["faults"]
    assert report["faults_recovered"] == report["faults"], (report["fault_log"], lines)
    assert report["crashes"] == 0, report["crash_log"]
    assert all(seconds > 0 for seconds in report["playing_s_by_quarter"]), (report["playing_s_by_quarter"], lines)
    assert all(frames is None or frames > 0 for frames in report["frames_by_quarter"]), report["frames_by_quarter"]
    assert report["frames"] > 100 and report["audio_underruns"] is not None, lines
    by_process = report["rss_mb_by_process"]  # the synth's own process is measured apart from the show's
    assert {"show", "render_process"} <= set(by_process) and by_process["show"]["end"] > 50, by_process
    assert abs(sum(mb["end"] for mb in by_process.values()) - report["rss_mb"]["end"]) < 1.0, report["rss_mb"]
    assert report["threads"]["end"] <= report["threads"]["start"] + 3, report["threads"]
    assert report["fds"]["end"] <= report["fds"]["start"] + 5, report["fds"]
    assert set(report["goals"]) == {key for key, _, _ in GOALS} and report["goals"]["crashes"]["pass"]
    assert "soak: PASS" in output or "soak: FAIL" in output


def test_an_unknown_fault_kind_is_refused_by_name(tmp_path):
    """`live soak --faults` names what it does not know and what it knows, before anything starts."""
    show = show_with(tmp_path, osc={"port": free_port()}, stages=[])
    result = run_live(["soak", str(show), "--seconds", "40", "--faults", "audio,camera"], timeout=30)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output, output
    assert "camera is not a fault kind" in output and "source,audio,reload,osc,model" in output, output
