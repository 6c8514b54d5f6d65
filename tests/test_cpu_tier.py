"""The CPU tier: edge-aware upsampling of a low-resolution style pass, flicker removal on a moving clip with known
motion, and a show that plays it. Real photos, the shipped painterly model on real ONNX Runtime, `live` itself."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures_live import decode_frames, free_port, run_live, show_with

from live.models.temporal import moving_clip, warp_error
from live.video.stylize import Stylizer
from live.video.upsample import downscale, guided_upsample

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "live" / "assets" / "astronaut.jpg"
PAINTERLY = ROOT / "exported_models" / "painterly-arbitrary.json"
STYLES = ("starry-blue", "umber-oil", "pink-sketch")  # cool strokes, dark oil, light sketch
SIZE = (320, 240)


def values(stylizer: Stylizer, **changes) -> dict:
    """The stylizer's parameters at their defaults, with `changes` ("style_a" for "/video/style_a")."""
    current = {p.address: p.default for p in stylizer.params()[0]}
    current.update({f"/video/{key}": value for key, value in changes.items()})
    return current


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    image = cv2.imread(str(PHOTO))
    return cv2.resize(image[40:472], SIZE, interpolation=cv2.INTER_AREA)  # 4:3, the person in view


@pytest.fixture(scope="module")
def clip():
    return moving_clip(cv2.imread(str(PHOTO)), frames=8, size=SIZE, seed=1)


@pytest.fixture(scope="module")
def tier() -> Stylizer:
    stylizer = Stylizer(PAINTERLY, ("cpu",), threads=2, scale=0.5)
    stylizer.open()
    return stylizer


def colour_texture(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Smooth random colour (each channel its own blurred noise): every window varies in all three channels."""
    noise = np.random.default_rng(seed).uniform(0, 255, (height // 8, width // 8, 3)).astype(np.float32)
    return np.clip(cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


def test_guided_upsampling_reproduces_a_known_per_pixel_affine_map():
    """Target = A(x) image + b(x), A and b drifting across the frame: the fit at quarter size, applied at full size,
    gives it back to about a grey level, where bilinear upscaling of the small target is far off."""
    width, height = 320, 240
    full = colour_texture(width, height)
    # rows: input channel i, columns: output channel c; each column keeps its output inside 0..255 (no clipping)
    left = np.array([[0.5, 0.0, 0.3], [0.3, -0.6, 0.0], [0.0, 0.2, 0.5]], np.float32)
    right = np.array([[0.2, 0.4, -0.3], [0.2, 0.0, 0.6], [0.4, 0.3, 0.0]], np.float32)
    left_offset, right_offset = np.array([20.0, 170.0, 25.0], np.float32), np.array([30.0, 20.0, 100.0], np.float32)

    def mapped(image: np.ndarray) -> np.ndarray:
        """The map at each pixel's place across the frame (0 at the left edge, 1 at the right)."""
        x = np.linspace(0.0, 1.0, image.shape[1], dtype=np.float32)[None, :, None, None]
        matrix = np.broadcast_to(left + x * (right - left), (*image.shape[:2], 3, 3))
        offset = left_offset + x[..., 0] * (right_offset - left_offset)
        out = np.einsum("hwi,hwic->hwc", image.astype(np.float32), matrix) + offset
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)

    small = downscale(full, 0.25)
    truth = mapped(full).astype(np.int16)
    bilinear = np.abs(cv2.resize(mapped(small), (width, height), interpolation=cv2.INTER_LINEAR) - truth)
    exact = np.abs(guided_upsample(small, mapped(small), full, eps=1.0) - truth)  # a vanishing ridge: exact
    assert exact.max() <= 2 and exact.mean() < 0.3, (exact.max(), exact.mean())
    shrunk = np.abs(guided_upsample(small, mapped(small), full) - truth)  # the default ridge shrinks a little
    assert shrunk.max() <= 6 and shrunk.mean() < 1.0, (shrunk.max(), shrunk.mean())
    assert shrunk.mean() < bilinear.mean() / 4, (shrunk.mean(), bilinear.mean())


def edge_width(row: np.ndarray) -> int:
    """Pixels of a rising or falling step between 10 % and 90 % of the way."""
    low, high = float(row[:20].mean()), float(row[-20:].mean())
    progress = (row.astype(np.float32) - low) / (high - low)
    return int(((progress > 0.1) & (progress < 0.9)).sum())


def test_guided_upsampling_keeps_an_edge_sharp_where_bilinear_blurs():
    width, height = 320, 240
    full = np.zeros((height, width, 3), np.uint8)
    full[:, :162] = (40, 90, 200)  # the edge falls inside a low-resolution pixel (162 / 4 = 40.5)
    full[:, 162:] = (210, 170, 30)
    small = downscale(full, 0.25)
    styled = 255 - small[..., ::-1]  # a colour map: inverted, red and blue swapped
    out = guided_upsample(small, np.ascontiguousarray(styled), full)
    bilinear = cv2.resize(np.ascontiguousarray(styled), (width, height), interpolation=cv2.INTER_LINEAR)
    for channel in range(3):
        assert edge_width(out[height // 2, :, channel]) <= 1
        assert edge_width(bilinear[height // 2, :, channel]) >= 4
    expected = 255 - full[..., ::-1].astype(np.int16)
    assert np.abs(out.astype(np.int16) - expected).max() <= 2  # both sides keep their mapped colour


def test_tier_is_closer_to_the_teacher_than_bilinear_upscaling(photo, tier):
    """The painterly net at half size per side, guided-upsampled, against the same net at full size (the teacher),
    compared with the naive baseline: the half-size output scaled up bilinearly."""
    teacher = Stylizer(PAINTERLY, ("cpu",), threads=2)
    teacher.open()
    for style in STYLES:
        settings = values(tier, style_a=style, stability=0.0)
        target = teacher.process(photo, settings).astype(np.float32)
        ours = tier.process(photo, settings)
        small = downscale(photo, tier.scale)
        naive = cv2.resize(teacher.process(small, settings), SIZE, interpolation=cv2.INTER_LINEAR)
        ours_error, naive_error = np.abs(ours - target).mean(), np.abs(naive - target).mean()
        assert ours.shape == photo.shape
        assert ours_error < 0.97 * naive_error, (style, ours_error, naive_error)


def test_the_clip_moves_as_its_flow_says(clip):
    """The clip's true flow explains its frames: warped along it they differ by little more than the noise;
    assuming no motion they differ far more. The masks leave out the moving subject's disoccluded trail."""
    along_flow = warp_error(clip.frames, clip)
    still = type(clip)(clip.frames, [None] + [np.zeros_like(f) for f in clip.flows[1:]], clip.masks)
    assert along_flow < 5.0  # two frames' noise of 3 levels each, and bilinear resampling
    assert warp_error(clip.frames, still) > 1.5 * along_flow
    for mask in clip.masks[1:]:
        assert 0.9 < mask.mean() < 1.0


def test_stability_lowers_warp_error_by_40_percent_and_0_is_each_frame_alone(clip, tier):
    for style in STYLES:
        alone = [tier.process(frame, values(tier, style_a=style, stability=0.0)) for frame in clip.frames]
        tier.stabilizer.reset()
        again = [tier.process(frame, values(tier, style_a=style, stability=0.0)) for frame in clip.frames[::-1]]
        assert all(np.array_equal(a, b) for a, b in zip(alone, again[::-1]))  # 0: no memory of other frames
        steady = [tier.process(frame, values(tier, style_a=style)) for frame in clip.frames]
        tier.stabilizer.reset()
        before, after = warp_error(alone, clip), warp_error(steady, clip)
        assert after <= 0.6 * before, (style, before, after)


def test_stability_shows_a_cut_at_once(clip, tier):
    """Where the camera shows something new (here everywhere: a cut to another picture) the occlusion mask lets
    the new frame through alone, with no trace of the old one."""
    settings = values(tier, style_a="umber-oil")
    for frame in clip.frames[:4]:
        tier.process(frame, settings)
    cut = np.ascontiguousarray(clip.frames[0][::-1, ::-1])  # upside down: every pixel disagrees with the warp
    shown = tier.process(cut, settings)
    tier.stabilizer.reset()
    alone = tier.process(cut, values(tier, style_a="umber-oil", stability=0.0))
    before = tier.process(clip.frames[3], values(tier, style_a="umber-oil", stability=0.0))
    assert np.abs(shown.astype(np.int16) - alone).mean() < 0.05 * np.abs(before.astype(np.int16) - alone).mean()


def test_a_fader_jump_shows_at_once_and_a_glide_stays_stabilized(clip, tier):
    """A performer's move is a wanted change: strength 0 -> 1 in one frame shows the full style at once (no fade
    through the flicker remover); a slow glide keeps the remover working."""
    tier.stabilizer.reset()
    for frame in clip.frames[:4]:
        tier.process(frame, values(tier, style_a="umber-oil", strength=0.0))
    jumped = tier.process(clip.frames[4], values(tier, style_a="umber-oil", strength=1.0))
    alone = tier.process(clip.frames[4], values(tier, style_a="umber-oil", strength=1.0, stability=0.0))
    assert np.array_equal(jumped, alone)
    glide = [tier.process(frame, values(tier, style_a="umber-oil", strength=0.9 + 0.01 * i))
             for i, frame in enumerate(clip.frames)]
    tier.stabilizer.reset()
    each = [tier.process(frame, values(tier, style_a="umber-oil", strength=0.9 + 0.01 * i, stability=0.0))
            for i, frame in enumerate(clip.frames)]
    assert warp_error(glide, clip) < 0.8 * warp_error(each, clip)


def test_a_show_with_style_scale_plays_the_tier(tmp_path):
    show = show_with(tmp_path, video={"model": "painterly-arbitrary.json", "source": "builtin", "style_scale": 0.25,
                                      "width": 320, "height": 240},
                     osc={"port": free_port()}, audio={"enabled": False}, stages=[],
                     params={"/video/style_a": "starry-blue", "/video/style_b": "umber-oil"})
    out = tmp_path / "tier.mp4"
    result = run_live(["run", str(show), "--for", "3", "--record", str(out), "--no-window"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    frames = decode_frames(out)
    assert len(frames) > 10 and frames[-1][1].shape == (240, 320, 3)

    bad = show_with(tmp_path, video={"style_scale": 1.5})
    result = run_live(["check", str(bad)])
    assert result.returncode != 0
    assert "[video] style_scale" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
