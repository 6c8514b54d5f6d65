"""Unattended shows: opening hours ([schedule]) evaluated at fixed times, their validation, and two real `live run`s:
attract mode following a figure that walks into a still room (a clip the test writes, played as the camera), and a
show that opens in its rest hours (a fake clock): black, silent and cheap until OSC wakes it."""

from __future__ import annotations

import signal
import socket
import time
import tomllib
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest
import tomli_w
from pythonosc.osc_message import OscMessage
from pythonosc.udp_client import SimpleUDPClient

from live.control.attract import STATE, Attract
from live.control.schedule import REST, Schedule, ScheduleSection, mode_at, weekdays
from live.errors import LiveError
from live.graph import build, check
from live.show import load_show
from live.video import hud
from fixtures_live import LiveProcess, audio_of, decode_frames, free_port, headless_env, show_with

WIDTH, HEIGHT, FPS = 320, 240, 30.0
SCENES = ('[scenes.calm]\n"/video/strength" = 0.0\n[scenes.busy]\n"/video/strength" = 1.0\n'
          '[[cues]]\nscene = "calm"\nfade = 0.1\n[[cues]]\nscene = "busy"\nfade = 0.1\n')
OPENING = ScheduleSection.model_validate({
    "rule": [{"days": "mon-fri", "from": "09:30", "to": "18:00", "mode": "play"},
             {"days": "fri-sat", "from": "22:00", "to": "02:00", "mode": "scene:calm"}],
    "outside": "rest"})


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_days_and_times_of_the_rules():
    assert weekdays("daily") == set(range(7))
    assert weekdays("mon-fri") == {0, 1, 2, 3, 4}
    assert weekdays("sat, sun") == {5, 6}
    assert weekdays("fri-mon") == {4, 5, 6, 0}  # a range may wrap over the weekend
    # 2026-12-07 is a Monday, 2026-12-05 a Saturday
    assert mode_at(OPENING, at("2026-12-07T09:30+00:00")) == "play"  # from is inside...
    assert mode_at(OPENING, at("2026-12-07T18:00+00:00")) == "rest"  # ...to is not
    assert mode_at(OPENING, at("2026-12-07T09:29+00:00")) == "rest"  # outside
    assert mode_at(OPENING, at("2026-12-05T12:00+00:00")) == "rest"  # a Saturday afternoon: outside
    assert mode_at(OPENING, at("2026-12-05T23:00+00:00")) == "scene:calm"  # overnight, Saturday night...
    assert mode_at(OPENING, at("2026-12-06T01:59+00:00")) == "scene:calm"  # ...into Sunday morning
    assert mode_at(OPENING, at("2026-12-07T01:00+00:00")) == "rest"  # Sunday night is not in fri-sat
    assert mode_at(OPENING, at("2026-12-05T01:00+00:00")) == "scene:calm"  # Friday night into Saturday
    whole = ScheduleSection.model_validate({"rule": [{"days": "sun", "from": "00:00", "to": "00:00",
                                                      "mode": "rest"}]})
    assert mode_at(whole, at("2026-12-06T23:59+00:00")) == "rest" and mode_at(whole, at("2026-12-07T00:00+00:00")) \
        == "play"  # from = to: the whole day; the default outside is play


def test_the_rules_read_the_clock_in_the_schedules_time_zone():
    berlin = OPENING.model_copy(update={"timezone": "Europe/Berlin"})
    new_york = OPENING.model_copy(update={"timezone": "America/New_York"})
    instant = at("2026-12-07T15:00+00:00")  # 16:00 in Berlin, 10:00 in New York, a Monday
    assert mode_at(berlin, instant) == "play" and mode_at(new_york, instant) == "play"
    late = at("2026-12-07T17:30+00:00")  # 18:30 in Berlin: closed; 12:30 in New York: open
    assert mode_at(berlin, late) == "rest" and mode_at(new_york, late) == "play"
    summer = at("2026-07-06T16:30+00:00")  # 18:30 in Berlin in summer time (UTC+2): closed
    assert mode_at(berlin, summer) == "rest"


def test_a_manual_rest_holds_until_the_next_boundary(tmp_path):
    tree = build(load_show(show_with(tmp_path, audio={"enabled": False},
                                     stages=[], outputs=[])), window=False, say=lambda _: None).tree
    schedule = Schedule(OPENING, tree, goto=lambda scene, fade: scene, say=lambda _: None)
    clock = [at("2026-12-07T17:59:00+00:00").astimezone()]
    schedule.now = lambda: clock[0]
    schedule.tick(0.0)
    assert tree.get(REST) is False  # open
    tree.set(REST, True, "osc")  # rested by hand...
    schedule.tick(1.0)
    assert tree.get(REST) is True  # ...holds
    clock[0] = at("2026-12-07T18:00:00+00:00").astimezone()
    schedule.tick(2.0)
    tree.set(REST, False, "osc")  # closed at 18:00; woken by hand: holds until the next boundary
    schedule.tick(3.0)
    assert tree.get(REST) is False
    clock[0] = at("2026-12-08T09:30:00+00:00").astimezone()
    schedule.tick(4.0)
    assert tree.get(REST) is False and schedule.mode == "play"


def test_idle_rest_rests_the_show_until_someone_comes_unless_the_schedule_rests(tmp_path):
    show = load_show(show_text(tmp_path, '[attract]\nenabled = true\nactive = "busy"\nidle = "rest"\nidle_after = 2\n'
                                         'active_after = 0.5\n', watch={"enabled": True}))
    tree = build(show, window=False, say=lambda _: None).tree
    closed = [False]
    attract = Attract(show.attract, tree, goto=lambda scene, fade: scene, say=lambda _: None,
                      schedule_rests=lambda: closed[0])
    presence = lambda value, now: tree.measure({"/in/video/presence": value}, now)  # noqa: E731
    attract.tick(0.0)
    assert tree.get(REST) is True and tree.get(STATE) == 0.0  # nobody seen yet: resting
    presence(0.9, 1.0)
    attract.tick(1.0)
    attract.tick(1.4)
    assert tree.get(REST) is True  # a flicker is nobody
    attract.tick(1.6)
    assert tree.get(REST) is False and tree.get(STATE) == 1.0  # someone stayed: awake
    presence(0.1, 2.0)
    attract.tick(2.0)
    attract.tick(3.9)
    assert tree.get(REST) is False  # a moment without presence is not gone
    attract.tick(4.1)
    assert tree.get(REST) is True and tree.get(STATE) == 0.0
    assert "REST  attract idle" in hud.lines("gallery", tree.snapshot, 0.0, 0, [], "")[1]  # the HUD shows both
    closed[0] = True  # the schedule's rest hours: presence no longer wakes the show
    presence(0.9, 5.0)
    attract.tick(5.0)
    attract.tick(6.0)
    assert tree.get(STATE) == 1.0 and tree.get(REST) is True


def show_text(tmp_path: Path, extra: str, **sections) -> Path:
    """The default show (silent, no latent stage unless `sections` say otherwise) with two scenes and the TOML in
    `extra` merged in, table by table."""
    path = show_with(tmp_path, **{"audio": {"enabled": False}, "stages": [], **sections})
    data = tomllib.loads(path.read_text())
    for key, value in tomllib.loads(SCENES + extra).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    path.write_text(tomli_w.dumps(data))
    return path


@pytest.mark.parametrize("extra, says", [
    ('[[schedule.rule]]\ndays = "mon-fry"\nfrom = "09:30"\nto = "18:00"\n', "[[schedule.rule]] #1 days: "),
    ('[[schedule.rule]]\nfrom = "9.30"\nto = "18:00"\n', "[[schedule.rule]] #1 from: "),
    ('[[schedule.rule]]\nfrom = "09:30"\nto = "24:10"\nmode = "sleep"\n', "[[schedule.rule]] #1 mode: 'sleep' is not"),
    ('[schedule]\ntimezone = "Europe/Atlantis"\n', "zoneinfo name"),
    ('[schedule]\noutside = "scene:party"\n', "[schedule] outside names scene 'party'"),
    ('[attract]\nenabled = true\nactive = "busy"\nidle = "party"\n', "[attract] idle = 'party' is not a scene"),
    ('[attract]\nenabled = true\nactive = "busy"\nidle = "calm"\n', "[watch] is off"),
])
def test_a_wrong_schedule_or_attract_mode_is_refused_naming_the_key(tmp_path, extra, says):
    with pytest.raises(LiveError) as err:
        show = load_show(show_text(tmp_path, extra, watch={"enabled": "[watch] is off" not in says}))
        build(show, window=False, say=lambda _: None)
    assert says in str(err.value), str(err.value)


def test_live_check_says_attract_needs_watch(tmp_path):
    show = load_show(show_text(tmp_path, '[attract]\nenabled = true\nactive = "busy"\nidle = "calm"\n'))
    problems = check(show)
    assert len(problems) == 1 and "[attract]" in problems[0] and "[watch]" in problems[0] and \
        "enabled = true" in problems[0]


def write_clip(path: Path) -> Path:
    """2 s of a still, dim room, then 2 s of a person-sized block walking to and fro in it (the file loops)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    for n in range(120):
        image = np.full((HEIGHT, WIDTH, 3), 70, np.uint8)
        if n >= 60:
            x = 20 + abs((n % 40) - 20) * 10
            cv2.rectangle(image, (x, 40), (x + 50, 200), (30, 30, 230), -1)
        writer.write(image)
    writer.release()
    return path


def listen() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    return sock


def received(sock: socket.socket, into: list, addresses: tuple[str, ...]) -> None:
    """Feedback messages so far, as (address, first argument)."""
    while True:
        try:
            data = sock.recv(65536)
        except (socket.timeout, BlockingIOError):
            return
        if data.startswith(b"#bundle"):
            continue
        message = OscMessage(data)
        if message.address in addresses:
            into.append((message.address, message.params[0]))


def test_attract_mode_follows_a_figure_walking_into_the_room(tmp_path):
    clip = write_clip(tmp_path / "room.mp4")
    feedback = listen()
    port = free_port()
    show = show_text(tmp_path, '[attract]\nenabled = true\nactive = "busy"\nidle = "calm"\nidle_after = 0.5\n'
                               'active_after = 0.3\n',
                     outputs=[], watch={"enabled": True, "rate": 15.0},
                     video={"source": str(clip), "width": WIDTH, "height": HEIGHT, "fps": FPS},
                     osc={"port": port, "feedback": [f"127.0.0.1:{feedback.getsockname()[1]}"], "feedback_hz": 20.0})
    live = LiveProcess(["run", str(show), "--for", "30"])
    seen: list[tuple[str, float]] = []
    try:
        live.wait_for("Playing")
        deadline = time.monotonic() + 20
        states = []
        while time.monotonic() < deadline:
            received(feedback, seen, ("/live/attract", "/video/strength"))
            states = [v for a, v in seen if a == "/live/attract"]
            if 1.0 in states and 0.0 in states[states.index(1.0):]:
                break
    finally:
        live.proc.send_signal(signal.SIGINT)
        code, output = live.finish()
        feedback.close()
    assert "Traceback" not in output
    assert "Attract: idle" in output and "Attract: active" in output, output
    assert 1.0 in states and 0.0 in states[states.index(1.0):], seen  # active when the figure moved, then idle
    strength = [v for a, v in seen[[i for i, (a, v) in enumerate(seen) if (a, v) == ("/live/attract", 1.0)][0]:]
                if a == "/video/strength"]
    assert max(strength) == pytest.approx(1.0) and strength[-1] == pytest.approx(0.0), seen  # busy, then calm
    lines = [line for line in output.splitlines() if line.startswith("Attract:")]
    assert "idle" in lines[0] and "active" in lines[1] and "idle" in lines[2], lines


def cpu_seconds(process: psutil.Process, seconds: float) -> tuple[float, float]:
    """CPU time per second over `seconds`: the show's process, and it with its children (the synth's render
    process)."""
    tree = [process, *process.children(recursive=True)]
    before = [sum(p.cpu_times()[:2]) for p in tree]
    time.sleep(seconds)
    used = [(sum(p.cpu_times()[:2]) - b) / seconds for p, b in zip(tree, before)]
    return used[0], sum(used)


def test_a_show_in_its_rest_hours_is_black_silent_and_cheap_until_woken(tmp_path, camera_file):
    port = free_port()
    out = tmp_path / "rest.mp4"
    show = show_text(tmp_path, '[[schedule.rule]]\ndays = "daily"\nfrom = "22:00"\nto = "02:00"\nmode = "rest"\n',
                     osc={"port": port}, audio={"enabled": True}, video={"width": WIDTH, "height": HEIGHT})
    live = LiveProcess(["run", str(show), "--source", str(camera_file), "--for", "40", "--record", str(out),
                        "--no-window"], env=headless_env(LIVE_FAKE_START="2026-12-05T23:00:00"))
    try:
        live.wait_for("Playing")
        t0 = time.monotonic()
        process = psutil.Process(live.proc.pid)
        time.sleep(1.0)
        resting = cpu_seconds(process, 3.0)
        SimpleUDPClient("127.0.0.1", port).send_message(REST, 0)
        woken = time.monotonic() - t0
        time.sleep(1.0)
        playing = cpu_seconds(process, 3.0)
        time.sleep(0.5)
    finally:
        live.proc.send_signal(signal.SIGINT)
        code, output = live.finish()
    assert code == 0 and "Traceback" not in output, output
    assert "Schedule: rest" in output, output
    print(f"CPU per second, the show's process (with the synth's): resting {resting[0]:.3f} ({resting[1]:.3f}), "
          f"playing {playing[0]:.3f} ({playing[1]:.3f})")
    assert resting[0] < 0.3 * playing[0] and resting[1] < 0.5 * playing[1], (resting, playing)
    frames = decode_frames(out)
    rest = [img for t, img in frames if 0.3 < t < woken - 0.3]
    awake = [img for t, img in frames if t > woken + 1.0]
    assert len(rest) >= 3 and awake, [round(t, 2) for t, _ in frames]
    assert max(float(img.mean()) for img in rest) < 3  # black
    assert all(float(img.mean()) > 20 for img in awake)  # the picture is back
    rest_rate = len(rest) / (woken - 0.6)
    assert rest_rate < 4, rest_rate  # black frames at a low rate while resting
    sound = audio_of(out)
    rate = 48000 * 2  # interleaved stereo
    quiet, loud = sound[int(0.3 * rate):int((woken - 0.3) * rate)], sound[int((woken + 1.5) * rate):]
    assert len(quiet) > rate and np.abs(quiet).max() < 1e-4, np.abs(quiet).max()  # silent while resting
    assert len(loud) > rate // 2 and np.sqrt(np.mean(loud ** 2)) > 1e-3  # the synth plays once woken


def test_a_saved_schedule_and_attract_mode_apply_while_playing(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    graph = build(load_show(show_text(tmp_path / "a", "", watch={"enabled": True})), window=False, say=lambda _: None)
    saved = load_show(show_text(tmp_path / "b", '[attract]\nenabled = true\nactive = "busy"\nidle = "calm"\n'
                                                '[schedule]\noutside = "rest"\n', watch={"enabled": True}))
    try:
        assert graph.reload(saved) == ["[schedule] applied", "[attract] applied"]
        assert STATE in graph.tree.params
        graph.surface._tick_unattended(0.0)
        assert graph.tree.get(REST) is True and graph.tree.get(STATE) == 0.0
    finally:
        graph.surface.close()
