"""Any picture is a style: the style bank, `live styles`, and a running show that takes a dropped picture and a
grabbed camera frame as new styles. Real parts: the shipped style-predictor and painterly-arbitrary on ONNX Runtime,
`live` in subprocesses, OSC over UDP, OSCQuery over HTTP, a video file as the camera, the recording decoded."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from fixtures_live import ROOT, LiveProcess, decode_frames, free_port, run_live, show_with, tree_of, wait_until
from live.control.osc_codec import encode_message
from live.errors import LiveError
from live.models.manifest import sha256_of
from live.show import load_show
from live.video.styles import MIN_SIDE, THUMB_SIDE, StyleBank, StylePredictor, read_picture

MODELS = ROOT / "exported_models"
ASTRONAUT = ROOT / "live" / "assets" / "astronaut.jpg"
PAINTERLY = {"/video/style_a": "starry-blue", "/video/style_b": "umber-oil", "/video/blend": 0.0}


def stripes(width: int = 240, height: int = 180) -> np.ndarray:
    """A loud picture drawn here: thick diagonal bands of saturated red, yellow and blue."""
    y, x = np.mgrid[0:height, 0:width]
    colours = np.array([[30, 30, 230], [20, 220, 240], [200, 60, 20]], np.uint8)
    return colours[((x + y) // 24) % 3]


def write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


@pytest.fixture(scope="module")
def predictor() -> StylePredictor:
    return StylePredictor(MODELS / "style-predictor.json")


def test_a_bank_round_trips_and_several_pictures_average_into_one_style(tmp_path, predictor):
    folder = tmp_path / "styles"
    drawn = write(folder / "stripes.png", stripes())
    bank = StyleBank(folder / "bank.json")
    entry = bank.add("mix", [ASTRONAUT, drawn], predictor)
    bank.save()
    alone = [predictor.predict(read_picture(p)) for p in (ASTRONAUT, drawn)]
    assert np.allclose(entry.vector, (alone[0] + alone[1]) / 2, atol=1e-6)
    assert min(np.linalg.norm(np.asarray(entry.vector) - v) for v in alone) > 1.0  # a real mix of two styles

    loaded = StyleBank.load(folder / "bank.json")
    assert loaded.names() == ["mix"]
    assert np.allclose(loaded.vector("mix"), entry.vector, atol=1e-6)
    sources = loaded.entry("mix").sources
    assert [s.path for s in sources] == [str(ASTRONAUT), "stripes.png"]  # inside the folder: relative to it
    assert [s.sha256 for s in sources] == [sha256_of(ASTRONAUT), sha256_of(drawn)]
    thumb = cv2.imread(str(folder / loaded.entry("mix").thumbnail))
    assert thumb is not None and max(thumb.shape[:2]) <= THUMB_SIDE
    assert (folder / loaded.entry("mix").thumbnail).read_bytes()[:2] == b"\xff\xd8"  # a JPEG
    first = (folder / "bank.json").read_bytes()
    loaded.save()
    assert (folder / "bank.json").read_bytes() == first  # the same bank writes the same bytes
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # written whole, nothing left over

    loaded.remove("mix")
    loaded.save()
    assert StyleBank.load(folder / "bank.json").names() == [] and not (folder / "thumbs" / "mix.jpg").exists()


def test_bad_pictures_names_and_banks_say_which_file_and_the_fix(tmp_path):
    tiny = write(tmp_path / "tiny.png", stripes(MIN_SIDE - 1, 40))
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not a picture at all")
    for path, what in ((tiny, "too small"), (junk, "not a readable picture"), (tmp_path / "gone.jpg", "not exist")):
        with pytest.raises(LiveError) as err:
            read_picture(path)
        assert str(path) in err.value.what and what in err.value.what and err.value.fix
    with pytest.raises(LiveError) as err:
        StyleBank(tmp_path / "bank.json").entry("monet")
    assert "monet" in err.value.what and "live styles list" in err.value.fix
    with pytest.raises(LiveError) as err:
        StylePredictor(tmp_path / "style-predictor.json")
    assert "style-predictor.json" in err.value.what and "make models" in err.value.fix
    (tmp_path / "bank.json").write_text('{"format": "live-style-bank", "styles": [{"name": 3}]}')
    with pytest.raises(LiveError) as err:
        StyleBank.load(tmp_path / "bank.json")
    assert str(tmp_path / "bank.json") in err.value.what and "live styles add" in err.value.fix


def test_live_styles_add_list_and_remove(tmp_path):
    show = show_with(tmp_path, video={"model": "painterly-arbitrary.json"}, params=PAINTERLY)
    drawn = write(tmp_path / "pictures" / "stripes.png", stripes())
    added = run_live(["styles", "add", "mine", str(ASTRONAUT), str(drawn), "--show", str(show)])
    assert added.returncode == 0 and "Added style mine (2 picture(s))" in added.stdout, added.stderr
    bank = StyleBank.load(tmp_path / "styles" / "bank.json")
    assert bank.names() == ["mine"] and len(bank.entry("mine").sources) == 2
    listed = run_live(["styles", "list", "--show", str(show)])
    assert "mine: " in listed.stdout and "starry-blue" in listed.stdout and sha256_of(drawn)[:12] in listed.stdout
    params = run_live(["params", str(show), "--json"])
    style_a = next(p for p in json.loads(params.stdout) if p["address"] == "/video/style_a")
    assert style_a["choices"][-1] == "mine" and "starry-blue" in style_a["choices"]  # the show lists its styles

    tiny = write(tmp_path / "tiny.png", stripes(20, 20))
    bad = run_live(["styles", "add", "small", str(tiny), "--show", str(show)])
    assert bad.returncode == 2 and str(tiny) in bad.stderr and "fix:" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 2  # what, and the fix

    removed = run_live(["styles", "remove", "mine", "--show", str(show)])
    assert removed.returncode == 0, removed.stderr
    assert StyleBank.load(tmp_path / "styles" / "bank.json").names() == []
    again = run_live(["styles", "remove", "mine", "--show", str(show)])
    assert again.returncode == 2 and "no style 'mine'" in again.stderr


def send(port: int, address: str, *args) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(encode_message(address, args), ("127.0.0.1", port))


def oscquery(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as reply:
        return json.loads(reply.read())


def test_a_playing_show_takes_a_dropped_picture_and_a_grabbed_frame_as_styles(tmp_path, camera_file):
    osc, query = free_port(), free_port()
    show = show_with(tmp_path, video={"model": "painterly-arbitrary.json", "width": 160, "height": 120}, stages=[],
                     osc={"port": osc}, oscquery={"port": query}, audio={"enabled": False}, params=PAINTERLY)
    folder, out = tmp_path / "styles", tmp_path / "out.mp4"
    live = LiveProcess(["run", str(show), "--source", str(camera_file), "--for", "40", "--no-window",
                        "--record", str(out)])
    live.wait_for("Playing")
    t0 = time.monotonic()
    time.sleep(1.0)
    write(folder / "stripes.png", stripes())
    (folder / "notes.txt").write_text("not a picture")
    write(folder / "tiny.png", stripes(16, 16))
    live.wait_for("Styles: stripes", timeout=15)
    assert "stripes" in oscquery(query, "/video/style_a")["RANGE"][0]["VALS"]  # the enum grew, OSCQuery serves it
    send(osc, "/video/style_a", "stripes")
    t_stripes = time.monotonic() - t0
    assert wait_until(lambda: oscquery(query, "/video/style_a?VALUE")["VALUE"] == ["stripes"], timeout=3)
    send(osc, "/video/style_a", "no-such-style")  # not in the bank: refused, the show keeps its style
    time.sleep(2.0)
    assert oscquery(query, "/video/style_a?VALUE")["VALUE"] == ["stripes"]
    send(osc, "/video/style/grab", 1)
    live.wait_for("Styles: grab-1", timeout=10)
    send(osc, "/video/style_a", "grab-1")
    t_grab = time.monotonic() - t0
    assert wait_until(lambda: oscquery(query, "/video/style_a?VALUE")["VALUE"] == ["grab-1"], timeout=3)
    time.sleep(2.0)
    added = run_live(["styles", "add", "astronaut", str(ASTRONAUT), "--show", str(show)])  # beside the playing show
    assert added.returncode == 0, added.stderr
    live.wait_for("Styles: astronaut", timeout=10)
    live.proc.terminate()  # SIGTERM: the show ends cleanly and finishes the recording
    code, output = live.finish()
    assert code == 0 and "Traceback" not in output and "failed on a frame" not in output, output
    assert output.count("notes.txt is not a picture") == 1 and output.count("tiny.png is only 16x16") == 1, output

    # the grab is saved with the show (picture + entry), so it is there after a restart
    grabbed = cv2.imread(str(folder / "grab-1.png"))
    bank = StyleBank.load(folder / "bank.json")
    assert bank.names() == ["stripes", "grab-1", "astronaut"] and grabbed.shape == (120, 160, 3)
    assert bank.entry("grab-1").sources[0].sha256 == sha256_of(folder / "grab-1.png")
    camera = cv2.resize(cv2.VideoCapture(str(camera_file)).read()[1], (160, 120), interpolation=cv2.INTER_AREA)
    assert np.abs(grabbed.astype(int) - camera).mean() < 3  # the camera's frame, not the stylized output
    choices = tree_of(load_show(show)).params["/video/style_a"].choices
    assert choices[-3:] == ("stripes", "grab-1", "astronaut")

    # the output really changed to each new style: each stretch is nearest its own style's rendering
    session = ort.InferenceSession(str(MODELS / "painterly-arbitrary.onnx"), providers=["CPUExecutionProvider"])
    shipped = StyleBank.load(MODELS / "painterly-styles.json")
    vectors = {"starry-blue": shipped.vector("starry-blue"), "stripes": bank.vector("stripes"),
               "grab-1": bank.vector("grab-1")}
    rendered = {name: session.run(None, {"frame": grabbed, "style": v, "strength": np.ones(1, np.float32)})[0]
                .astype(np.float32) for name, v in vectors.items()}
    names = list(rendered)
    apart = [np.abs(rendered[a] - rendered[b]).mean() for i, a in enumerate(names) for b in names[i + 1:]]
    assert min(apart) > 8, apart  # three looks a viewer tells apart
    frames = decode_frames(out)
    stretches = {"starry-blue": (0.3, t_stripes - 0.3), "stripes": (t_stripes + 0.8, t_grab - 0.3),
                 "grab-1": (t_grab + 0.8, t_grab + 1.8)}
    for name, (start, end) in stretches.items():
        shown = [image.astype(np.float32) for t, image in frames if start < t < end]
        assert shown, (name, start, end, [t for t, _ in frames][-1])
        distance = {other: float(np.median([np.abs(f - r).mean() for f in shown])) for other, r in rendered.items()}
        assert min(distance, key=distance.get) == name, (name, distance)
        assert distance[name] < 0.5 * min(d for other, d in distance.items() if other != name), (name, distance)
