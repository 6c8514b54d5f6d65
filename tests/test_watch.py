"""Video analysis ([watch]) on real parts: a clip the test writes plays through the show's own camera path (a video
file is a camera here), the graph's analysis part publishes /in/video/*, and the values follow what the clip does;
the frame path never waits for the analysis; the mask stage styles the person only, or the background only."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from live.errors import LiveError
from live.graph import Graph, build
from live.parts import close_in_reverse, open_in_order
from live.show import load_show
from live.video.analysis import Analyser
from fixtures_live import show_with, wait_until

WIDTH, HEIGHT, FPS = 320, 240, 30.0
PHASE = 60  # frames per phase of the clip: 2 s
PHASES = ("still", "red", "blue", "bright")
RED, BLUE = (30, 30, 230), (230, 40, 30)  # BGR
TINY = (40, 30)  # frames are matched to the clip's at this size


def clip_frame(n: int) -> np.ndarray:
    """Frame `n` of the test clip: a dim grey room (2 s), then a person-sized red block moving to and fro in the top
    left ninth (2 s), the same block blue (2 s), then the room lit up and empty (2 s)."""
    phase = PHASES[n // PHASE]
    level = 200 if phase == "bright" else 70
    shade = np.linspace(level - 15, level + 15, HEIGHT, dtype=np.float32)[:, None, None]
    image = np.broadcast_to(shade, (HEIGHT, WIDTH, 3)).astype(np.uint8).copy()
    if phase in ("red", "blue"):
        x = 8 + abs((n % 20) - 10) * 6  # 8..68: inside the first of three columns (0..106)
        cv2.rectangle(image, (x, 8), (x + 28, 70), RED if phase == "red" else BLUE, -1)
    return image


def write_clip(path: Path) -> tuple[Path, np.ndarray]:
    """The clip as an MP4 file, and each of its frames as decoded (tiny), to tell which frame was analysed."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    for n in range(PHASE * len(PHASES)):
        writer.write(clip_frame(n))
    writer.release()
    decoded, cap = [], cv2.VideoCapture(str(path))
    while (read := cap.read())[0]:
        decoded.append(cv2.resize(read[1], TINY, interpolation=cv2.INTER_AREA).astype(np.float32))
    cap.release()
    assert len(decoded) == PHASE * len(PHASES)
    return path, np.stack(decoded)


def watch_show(tmp_path: Path, source: str, **watch):
    return load_show(show_with(tmp_path, audio={"enabled": False}, outputs=[], watch={"enabled": True, **watch},
                               video={"source": source, "width": WIDTH, "height": HEIGHT, "fps": FPS}))


def play(graph: Graph, until: Callable[[], bool], timeout: float) -> None:
    """Open the graph's parts as `live run` does, wait for `until`, close them."""
    opened: list = []
    open_in_order(graph.parts, opened, say=lambda _: None)
    try:
        wait_until(until, timeout=timeout, every=0.05)
    finally:
        close_in_reverse(opened)


def test_the_values_follow_the_clip(tmp_path):
    clip, decoded = write_clip(tmp_path / "clip.mp4")
    graph = build(watch_show(tmp_path, str(clip)), say=lambda _: None)
    images: dict[float, np.ndarray] = {}  # capture time -> the frame, as the chain took it
    records: list[tuple[int, dict]] = []  # (clip frame, values published for it), in the order published
    graph.chain.taps.insert(0, lambda frame: images.__setitem__(frame.captured, frame.image))

    def measured(values, at):
        tiny = cv2.resize(images.pop(at), TINY, interpolation=cv2.INTER_AREA).astype(np.float32)
        records.append((int(np.abs(decoded - tiny).mean(axis=(1, 2, 3)).argmin()), dict(values)))

    graph.tree.on_measure(measured)
    bright = PHASES.index("bright") * PHASE

    def looped() -> int | None:
        """Where the clip's second pass begins among the records (the file loops), None before."""
        lit = next((i for i, (n, _) in enumerate(records) if n >= bright), None)
        return None if lit is None else next((i for i, (n, _) in enumerate(records[lit:], lit) if n < bright), None)

    play(graph, lambda: looped() is not None, timeout=30)
    first_pass = records[:looped()]

    # each record's phase, and how many records of that phase came before it (the still and the lit room are the
    # same frame over and over, so the clip frame alone does not say how far into its phase the clip is)
    phased, previous, run = [], None, 0
    for n, v in first_pass:
        phase = PHASES[n // PHASE]
        run = run + 1 if phase == previous else 0
        phased.append((phase, run, v))
        previous = phase

    def values(phase: str, address: str, settle: int = 6) -> list[float]:
        """`address` over the frames of `phase`, leaving out the first `settle` (the analysis compares a frame with
        the one analysed before it, which may be the last phase's)."""
        return [v[address] for p, run, v in phased if p == phase and run >= settle]

    seen = {phase: len(values(phase, "/in/video/motion")) for phase in PHASES}
    print(f"\nanalysed per phase: {seen}; {graph.watch.stats()}")
    assert min(seen.values()) >= 10, seen
    median = lambda phase, address, settle=6: statistics.median(values(phase, address, settle))  # noqa: E731
    for phase in PHASES:
        print(f"{phase:>6}: " + ", ".join(f"{name.rsplit('/', 1)[1]} {median(phase, name):.3f}" for name in (
            "/in/video/motion", "/in/video/motion/grid/0", "/in/video/motion/grid/4", "/in/video/brightness",
            "/in/video/colour/hue", "/in/video/colour/saturation", "/in/video/presence", "/in/video/people")))
    # motion rises when the clip moves, in the cell where it moves
    assert median("still", "/in/video/motion") < 0.002
    for phase in ("red", "blue"):
        assert median(phase, "/in/video/motion") > 0.005
        assert median(phase, "/in/video/motion/grid/0") > 0.05
        assert all(median(phase, f"/in/video/motion/grid/{cell}") < 0.01 for cell in range(1, 9))
    # the dominant hue follows the colour; brightness follows the light
    red = median("red", "/in/video/colour/hue")
    assert min(red, 1.0 - red) < 0.03  # red sits at 0 (and 1)
    assert abs(median("blue", "/in/video/colour/hue") - 2 / 3) < 0.03
    assert median("red", "/in/video/colour/saturation") > 0.7
    assert median("bright", "/in/video/brightness") > median("still", "/in/video/brightness") + 0.4
    # someone is there once the block moves in; nobody before
    assert max(values("still", "/in/video/presence", settle=30)) < 0.1
    assert max(values("still", "/in/video/people", settle=30)) == 0
    assert max(values("red", "/in/video/presence")) > 0.5
    assert max(values("red", "/in/video/people")) >= 1


def test_the_picture_never_waits_for_the_analysis(tmp_path):
    """The built-in source at 30 fps through the fast model, three ways side by side: no analysis, the analysis,
    and an analysis that takes 250 ms a frame. The output frame rate is the same."""
    seconds, rates = 4.0, {}
    for way in ("off", "on", "slow", "off again"):
        show = watch_show(tmp_path, "builtin", enabled=way in ("on", "slow"))
        graph = build(show, say=lambda _: None)
        if way == "slow":
            analyse = graph.watch.analyse
            graph.watch.analyse = lambda frame: (time.sleep(0.25), analyse(frame))[1]
        frames, opened = 0, []
        open_in_order(graph.parts, opened, say=lambda _: None)
        try:
            wait_until(lambda: graph.stylized.get(timeout=0.1) is not None, timeout=10)
            start = time.perf_counter()
            while time.perf_counter() - start < seconds:
                frames += graph.stylized.get(timeout=0.1) is not None
            rates[way] = frames / (time.perf_counter() - start)
            watch = graph.watch.stats() if graph.watch else {}
        finally:
            close_in_reverse(opened)
        print(f"\n{way}: {rates[way]:.1f} fps out, analysis {watch}")
        if way == "slow":
            assert watch["analysed"] <= seconds * 4 + 2 and watch["skipped"] > seconds * 15, watch
    baseline = min(rates["off"], rates["off again"])
    assert rates["on"] > 0.85 * baseline and rates["slow"] > 0.85 * baseline, rates


def test_analysis_cost_per_frame():
    """Each measure's median time on 320x240 frames of the built-in source (printed for the README), each well
    within a frame's time."""
    from live.video.capture import BuiltinSource

    source, analyser = BuiltinSource(WIDTH, HEIGHT), Analyser()
    frames = [source.frame(t * 0.2) for t in range(60)]
    times: dict[str, list[float]] = {}

    def timed(name, call, *args):
        began = time.perf_counter()
        out = call(*args)
        times.setdefault(name, []).append((time.perf_counter() - began) * 1000)
        return out

    for n, frame in enumerate(frames):
        small = timed("shrink to 160 wide", analyser.small, frame)
        timed("motion + grid", analyser.motion, small)
        timed("brightness", analyser.brightness, small)
        timed("dominant colour", analyser.colour, small)
        timed("presence (MOG2 + blobs)", analyser.foreground, small)
    medians = {name: statistics.median(ms) for name, ms in times.items()}
    print("\n" + "\n".join(f"{name}: {ms:.3f} ms" for name, ms in medians.items()))
    assert all(ms < 5.0 for ms in medians.values()), medians


def test_the_measured_values_are_read_only(tmp_path):
    show = watch_show(tmp_path, "builtin", grid=2)
    tree = build(show, say=lambda _: None).tree
    grid = [a for a in tree.params if a.startswith("/in/video/motion/grid/")]
    assert sorted(grid) == [f"/in/video/motion/grid/{n}" for n in range(4)]
    assert all(tree.params[a].readonly for a in tree.params if a.startswith("/in/video/"))
    with pytest.raises(ValueError, match="read-only"):
        tree.set("/in/video/motion", 0.5)
    off = load_show(show_with(tmp_path, audio={"enabled": False}))
    assert not any(a.startswith("/in/video/") for a in build(off, say=lambda _: None).tree.params)


def test_a_mask_stage_without_the_analysis_is_refused(tmp_path):
    show = load_show(show_with(tmp_path, audio={"enabled": False}, stages=[{"kind": "mask"}]))
    with pytest.raises(LiveError, match=r"\[\[stages\]\] kind = \"mask\".*video analysis") as err:
        build(show, say=lambda _: None)
    assert "mask_model" in err.value.fix
