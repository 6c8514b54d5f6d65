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
ASTRONAUT = Path(__file__).resolve().parents[1] / "live" / "assets" / "astronaut.jpg"
MODELS = Path(__file__).resolve().parents[1] / "exported_models"


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
    within a frame's time; the models on one ONNX Runtime thread, as the analysis part opens them."""
    from live.video.analysis import MASK_WIDTH
    from live.video.capture import BuiltinSource
    from live.video.people import FaceFinder, PersonMask

    source, analyser = BuiltinSource(WIDTH, HEIGHT), Analyser()
    finder, masker = FaceFinder(MODELS / "face-detection.json"), PersonMask(MODELS / "person-segmentation.json")
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
        timed("faces (BlazeFace)", finder.faces, frame)
        timed("person mask (selfie segmentation)", masker.mask,
              cv2.resize(frame, (MASK_WIDTH, MASK_WIDTH * HEIGHT // WIDTH), interpolation=cv2.INTER_AREA))
    medians = {name: statistics.median(ms) for name, ms in times.items()}
    print("\n" + "\n".join(f"{name}: {ms:.3f} ms" for name, ms in medians.items()))
    assert all(ms < 5.0 for name, ms in medians.items() if "(" not in name or "MOG2" in name), medians
    assert all(ms < 30.0 for ms in medians.values()), medians  # the models: well within a frame at 30 fps


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




def astronaut_clip(tmp_path: Path) -> Path:
    """A still clip of the astronaut photo (its top 4:3, at the show's size), Motion JPEG: every frame decodes to the
    same pixels."""
    photo = cv2.imread(str(ASTRONAUT))
    frame = cv2.resize(photo[:photo.shape[1] * 3 // 4], (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
    path = tmp_path / "astronaut.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (WIDTH, HEIGHT))
    for _ in range(30):
        writer.write(frame)
    writer.release()
    return path


def test_the_mask_stage_styles_the_person_only_or_the_background_only(tmp_path):
    from live.video.analysis import MASK_WIDTH
    from live.video.people import PersonMask

    show = load_show(show_with(
        tmp_path, audio={"enabled": False}, outputs=[], stages=[{"kind": "mask"}],
        watch={"enabled": True, "mask_model": str(MODELS / "person-segmentation.json")},
        video={"source": str(astronaut_clip(tmp_path)), "width": WIDTH, "height": HEIGHT, "fps": FPS},
        params={"/mask/feather": 0.0, "/video/strength": 1.0}))
    graph = build(show, say=lambda _: None)
    cameras: dict[float, np.ndarray] = {}
    graph.chain.taps.insert(0, lambda frame: cameras.__setitem__(frame.captured, frame.image))
    mask_stage = graph.chain.stages[1]
    outputs: dict[str, list] = {"person": [], "background": []}
    opened: list = []
    open_in_order(graph.parts, opened, say=lambda _: None)
    try:  # masks made from the clip's frames, not from the built-in source's before the clip opened
        assert wait_until(lambda: graph.capture.stats()["state"] == "playing", timeout=10)
        playing = graph.watch.analysed
        assert wait_until(lambda: graph.watch.analysed >= playing + 5, timeout=10)
        for mode in outputs:
            graph.tree.set("/mask/mode", mode)
            since = time.perf_counter()
            while len(outputs[mode]) < 5 and time.perf_counter() - since < 30:
                frame = graph.stylized.get(timeout=0.1)
                if frame is not None and frame.values_at > since and mask_stage.masked:
                    outputs[mode].append((cameras[frame.captured], frame.image))
    finally:
        close_in_reverse(opened)
    # where the person is, as the analysis thread saw it: the same model on the same frame, at the stage's size
    camera = outputs["person"][0][0]
    small = cv2.resize(camera, (MASK_WIDTH, MASK_WIDTH * HEIGHT // WIDTH), interpolation=cv2.INTER_AREA)
    weight = cv2.resize(PersonMask(MODELS / "person-segmentation.json").mask(small), (WIDTH, HEIGHT))
    # a pixel or two of margin: the mask shown may be a frame older than the frame (the same still picture)
    kernel = np.ones((5, 5), np.uint8)
    person = cv2.erode((weight > 0.99).astype(np.uint8), kernel) > 0
    background = cv2.erode((weight < 0.001).astype(np.uint8), kernel) > 0
    print(f"\nperson {person.mean():.0%} of the picture, background {background.mean():.0%}, mask lag "
          f"{mask_stage.lag} frames")
    assert 0.15 < person.mean() < 0.6 and background.mean() > 0.3  # the astronaut, not the whole picture
    for mode, pairs in outputs.items():
        assert len(pairs) == 5, f"{mode}: {len(pairs)} masked frames"
        kept, styled = (background, person) if mode == "person" else (person, background)
        for camera, out in pairs:
            change = np.abs(out.astype(np.int16) - camera).max(axis=2)
            print(f"{mode}: unstyled part changed by at most {change[kept].max()}, styled part by "
                  f"{change[styled].mean():.0f} on average")
            assert change[kept].max() <= 1, f"{mode}: the {('background', 'person')[mode != 'person']} changed"
            assert change[styled].mean() > 20, f"{mode}: the style did not show"


def test_faces_and_the_mask_see_someone_standing_still(tmp_path):
    show = watch_show(tmp_path, str(astronaut_clip(tmp_path)), face_model=str(MODELS / "face-detection.json"),
                      mask_model=str(MODELS / "person-segmentation.json"))
    graph = build(show, say=lambda _: None)
    play(graph, lambda: graph.watch.analysed >= 30, timeout=30)
    seen = {a.removeprefix("/in/video/"): round(v, 3) for a, v in graph.tree.snapshot.items()
            if a.startswith("/in/video/") and "/grid/" not in a}
    print(f"\n{seen}")
    assert seen["faces"] == 1 and seen["people"] >= 1
    assert seen["presence"] > 0.9  # nothing moves: the subtractor alone would say nobody
    assert 0.3 < seen["face/x"] < 0.7 and 0.1 < seen["face/y"] < 0.5 and 0.1 < seen["face/size"] < 0.5
    assert 0.15 < seen["person/area"] < 0.7


def test_a_missing_model_is_said_and_its_sources_rest(tmp_path):
    said: list[str] = []
    show = load_show(show_with(
        tmp_path, audio={"enabled": False}, outputs=[], stages=[{"kind": "mask"}],
        watch={"enabled": True, "face_model": "nowhere/face.json", "mask_model": "nowhere/person.json"},
        video={"source": "builtin", "width": WIDTH, "height": HEIGHT, "fps": FPS}))
    graph = build(show, say=said.append)
    frames = []
    opened: list = []
    open_in_order(graph.parts, opened, say=said.append, announce=said.append)
    try:
        wait_until(lambda: graph.watch.analysed >= 10 and frames.append(graph.stylized.get(0.1)) is None
                   and len([f for f in frames if f is not None]) >= 10, timeout=20)
    finally:
        close_in_reverse(opened)
    missing = [line for line in said if "nowhere" in line]
    print("\n" + "\n".join(missing))
    assert len(missing) == 2 and all("fix:" in line and "at rest" in line for line in missing), said
    assert any("face_model" in line and "face.json" in line for line in missing)
    assert any("mask_model" in line and "person.json" in line for line in missing)
    assert graph.watch.analysed >= 10 and len([f for f in frames if f is not None]) >= 10  # the show played on
    assert graph.tree.get("/in/video/faces") == 0 and graph.tree.get("/in/video/face/size") == 0
    assert graph.chain.stages[1].masked == 0 and not graph.chain.errors  # the style everywhere, nothing failed
    assert "model(s) missing" in graph.watch.status()
    from live.graph import check  # `live check` says so too

    problems = check(show)
    assert len(problems) == 2 and "face.json" in problems[0] and "person.json" in problems[1], problems


def test_a_faces_tilt_and_turn_follow_the_head():
    """The face's landmarks as sources: the astronaut's picture rotated 20 degrees each way (her head leans with
    it). BlazeFace's eyes are coarse (a model pixel is 4 of this picture's, a few degrees of tilt), so the test asks
    for the lean's direction and size, not its degree; she faces the camera, so her turn stays small."""
    from live.video.analysis import pose
    from live.video.people import FaceFinder

    finder = FaceFinder(MODELS / "face-detection.json")
    photo = cv2.imread(str(Path(__file__).resolve().parent.parent / "live" / "assets" / "astronaut.jpg"))
    height, width = photo.shape[:2]

    def seen(degrees: float) -> tuple[float, float]:  # OpenCV: a positive angle turns the picture anticlockwise
        image = cv2.warpAffine(photo, cv2.getRotationMatrix2D((width / 2, height / 3), degrees, 1.0), (width, height))
        faces = finder.faces(image)
        assert len(faces) == 1
        return pose(faces[0], width, height)

    (left, left_turn), (upright, turn), (right, right_turn) = seen(20), seen(0), seen(-20)
    assert left < upright < right  # anticlockwise: her head leans to the picture's left, tilt falls
    assert right - left == pytest.approx(40 / 45, abs=0.25)  # measured here: 0.76
    assert max(abs(left_turn), abs(turn), abs(right_turn)) < 0.35
