"""`live train style --from painterly-arbitrary`: fine-tune the pretrained transfer net on a user's style images.

The pinned package's transfer net paints any style its predictor can describe in 100 numbers; a description that
short loses what makes a particular picture itself. Fine-tuning starts from exactly that (the net as shipped, each
style's vector as the predictor sees its images) and trains the net's weights and the vectors together against
the picture's own MobileNetV2 Gram statistics, on augmented content photos, so the result moves towards the
picture while the net keeps what it knows about painting. The export is a few-style model with the player's
contract: uint8 BGR frame, style_weights over the tuned styles (they mix style vectors), strength.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim

from live.errors import LiveError
from live.models.build_pretrained import MULTIPLE, PACKAGE, STYLE_SIZE, VERSION
from live.models.manifest import style_model_fields, write_manifest
from live.train.export import command_line, export_onnx
from live.train.perceptual import MobileNetFeatures, TransferNet
from live.train.seeding import reproducible
from live.train.style_data import SCENE_SIZE, augment_batch, content_pool, fit_short_side, read_image
from live.train.style_data import STYLE_SIZE as TARGET_SIZE
from live.train.style_loss import StyleLoss, gram
from live.train.style_net import normalise_weights

BASES = ("painterly-arbitrary",)  # what --from can start from
LOG_EVERY = 25
EVAL_SCENES = 3  # held-out generated scenes, besides the bundled photo, for the distances before and after
EVAL_SIZE = 256
PHOTO = Path(__file__).resolve().parent.parent / "assets" / "astronaut.jpg"  # the built-in source's photo
EXPORT_EXAMPLE, EXPORT_CHECK = (96, 128), (90, 154)  # traced H, W; a size not a multiple of 4 checked on ORT
PARITY_TOLERANCE = 1.0  # grey levels
# The net already paints: no range or flat-hue guards (they fought the style image's own colour fields); colour
# and content only keep it from drifting.
WEIGHTS = {"style": 1.0, "colour": 1.0, "content": 0.3, "tv": 0.01, "flat_hue": 0.0, "range": 0.0}
LICENCE = (f"Apache-2.0 (fine-tuned from Magenta / TensorFlow weights in {PACKAGE} {VERSION}; see "
           "LICENSE-Apache-2.0.txt and NOTICE)")


class TunedModel(nn.Module):
    """What ships: uint8 BGR HWC frame + style_weights [N] + strength [1] -> uint8 BGR HWC frame; the weights
    mix the tuned style vectors, so a blend interpolates styles."""

    def __init__(self, net: TransferNet, vectors: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.vectors = nn.Parameter(vectors.clone())
        self.register_buffer("reverse", torch.tensor([2, 1, 0]), persistent=False)

    def forward(self, frame: torch.Tensor, style_weights: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
        x = frame.permute(2, 0, 1).index_select(0, self.reverse).unsqueeze(0).to(torch.float32) / 255.0  # RGB
        w, active = normalise_weights(style_weights.unsqueeze(0))
        height, width = frame.shape[0], frame.shape[1]
        padded = F.pad(x, (0, (-width) % MULTIPLE, 0, (-height) % MULTIPLE), mode="reflect")
        y = self.net(padded, w @ self.vectors)[:, :, :height, :width]
        out = x + (strength * active).reshape(1, 1, 1, 1) * (y - x)
        out = out.mul(255.0).clamp(0.0, 255.0).round()
        return out.squeeze(0).to(torch.uint8).index_select(0, self.reverse).permute(1, 2, 0)


def style_groups(pairs: list[str]) -> dict[str, list[Path]]:
    """NAME=PATH pairs -> the images of each style name, in first-seen order (several images make one style)."""
    groups: dict[str, list[Path]] = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path or any(c.isspace() for c in name):
            raise LiveError(f"--style-image {pair!r} is not NAME=PATH", "give e.g. --style-image mine=painting.jpg")
        groups.setdefault(name, []).append(Path(path))
    if not groups:
        raise LiveError("--from needs at least one style image", "add --style-image NAME=PATH")
    return groups


def load_style(paths: list[Path], features: MobileNetFeatures) -> tuple[torch.Tensor, torch.Tensor]:
    """One style's [3, h, w] RGB Gram target and [100] starting vector. Its images stand side by side at the same
    height, so their Gram and colour statistics average (weighted by area), and their predicted vectors average.
    LiveError naming a file that does not decode or is too small."""
    parts = []
    for path in paths:
        img = read_image(path, "style image")
        if min(img.shape[:2]) < 64:
            raise LiveError(f"style image {path} is {img.shape[1]}x{img.shape[0]}: too small to show brushwork",
                            "give a picture at least 64 pixels on its short side (256 or more is best)")
        parts.append(torch.from_numpy(fit_short_side(img, TARGET_SIZE)[:TARGET_SIZE]).permute(2, 0, 1))
    vector = torch.stack([predicted_vector(features, part) for part in parts]).mean(0)
    return torch.cat(parts, 2).contiguous(), vector


def predicted_vector(features: MobileNetFeatures, image: torch.Tensor) -> torch.Tensor:
    """The predictor's style vector of a [3, h, w] image as the package computes it: centre square, 256 x 256."""
    side = min(image.shape[1:])
    top, left = (image.shape[1] - side) // 2, (image.shape[2] - side) // 2
    square = image[None, :, top:top + side, left:left + side]
    with torch.no_grad():
        return features.net(F.interpolate(square, size=(STYLE_SIZE, STYLE_SIZE), mode="bilinear", antialias=True,
                                          align_corners=False))[0]


def eval_images(seed: int) -> torch.Tensor:
    """[EVAL_SCENES + 1, 3, EVAL_SIZE, EVAL_SIZE]: the bundled photo and held-out scenes (never trained on)."""
    photo = cv2.resize(read_image(PHOTO, "bundled photo"), (EVAL_SIZE, EVAL_SIZE), interpolation=cv2.INTER_AREA)
    scenes = content_pool(seed + 1, EVAL_SCENES, size=EVAL_SIZE)
    return torch.cat([torch.from_numpy(photo).permute(2, 0, 1)[None], scenes])


def distances(net: TransferNet, vectors: torch.Tensor, loss: StyleLoss, images: torch.Tensor) -> dict[str, list]:
    """Per style, means over `images`: `gram`, over the feature layers, ||G(stylized) - G(style)||^2 / ||G(style)||^2
    (how far from the style); `content`, the relative squared error of the content layer's features (how far from
    the photo)."""
    out: dict[str, list] = {"gram": [], "content": []}
    layer = loss.features.content_layer
    with torch.no_grad():
        photo = loss.features(images)[layer]
        for s in range(len(vectors)):
            feats = loss.features(net(images, vectors[s].expand(len(images), -1)))
            rel = [((gram(f) - getattr(loss, f"g{i}")[s]).square().sum((1, 2))
                    / getattr(loss, f"g{i}")[s].square().sum()).mean() for i, f in enumerate(feats)]
            out["gram"].append(round(float(torch.stack(rel).mean()), 5))
            out["content"].append(round(float((feats[layer] - photo).square().mean() / photo.square().mean()), 5))
    return out


def tune(args: argparse.Namespace) -> tuple[TunedModel, dict[str, float], dict[str, dict[str, list]]]:
    """Fine-tune; return the model, the final losses (mean of the last LOG_EVERY steps) and the distances on the
    held-out images before and after."""
    gen = reproducible(args.seed, args.threads)
    features = MobileNetFeatures()
    targets, vectors = zip(*(load_style(paths, features) for paths in style_groups(args.style_image).values()))
    loss_fn = StyleLoss(list(targets), features, WEIGHTS)
    net = TransferNet()
    model = TunedModel(net, torch.stack(vectors))
    pool, held_out = content_pool(args.seed, args.scenes, args.content, SCENE_SIZE), eval_images(args.seed)
    before = distances(net, model.vectors, loss_fn, held_out)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    window: list[dict[str, float]] = []
    tick = time.perf_counter()
    for step in range(1, args.steps + 1):
        index = (step * args.batch + torch.arange(args.batch)) % len(targets)
        content = augment_batch(pool, args.batch, args.size, gen)
        terms = loss_fn(net(content, model.vectors[index]), content, index, gen)
        total = sum(terms.values())
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        window = (window + [{"total": total.item(), **{k: v.item() for k, v in terms.items()}}])[-LOG_EVERY:]
        if step % LOG_EVERY == 0 or step == args.steps:
            now = time.perf_counter()
            means = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
            print(f"step {step}/{args.steps}  " + "  ".join(f"{k} {v:.4f}" for k, v in means.items())
                  + f"  {(now - tick) / (step % LOG_EVERY or LOG_EVERY):.2f} s/step", flush=True)
            tick = now
    after = distances(net, model.vectors.detach(), loss_fn, held_out)
    means = {k: round(sum(w[k] for w in window) / len(window), 5) for k in window[0]}
    return model, means, {"before": before, "after": after}


def export(model: TunedModel, args: argparse.Namespace, argv: list[str], losses: dict[str, float],
           held_out: dict[str, dict[str, list]], seconds: float) -> Path:
    """Write <out>/<name>.onnx and its manifest; on any failure neither is left behind half-written."""
    names = list(style_groups(args.style_image))

    def inputs(h: int, w: int) -> tuple[torch.Tensor, ...]:
        gen = torch.Generator().manual_seed(h * w)
        frame = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=gen)
        weights = torch.linspace(1.0, 0.5, len(names))
        return frame, weights, torch.tensor([0.8])

    path = args.out / f"{args.name}.onnx"
    dims = {"frame": {0: Dim("H", min=16, max=4096), 1: Dim("W", min=16, max=4096)},
            "style_weights": None, "strength": None}
    parity = export_onnx(model, inputs(*EXPORT_EXAMPLE), path, ["frame", "style_weights", "strength"],
                         ["frame_out"], dynamic_shapes=dims, check=inputs(*EXPORT_CHECK), tolerance=PARITY_TOLERANCE)
    data = ("style images: " + ", ".join(args.style_image) + "; "
            + (f"content photos from {args.content}" if args.content
               else f"{args.scenes} generated content scenes, augmented"))
    provenance = {
        "command": command_line("style", argv), "from": f"{args.base} (the transfer net of {PACKAGE} {VERSION})",
        "data": data, "seed": args.seed, "steps": args.steps, "train_seconds": round(seconds), "crop": args.size,
        "batch": args.batch, "threads": args.threads,
        "loss": "MobileNetV2 (the style predictor's) Gram + colour, feature content, TV and flat-hue terms",
        "held_out": {**held_out, "on": f"the bundled photo and {EVAL_SCENES} held-out scenes at {EVAL_SIZE}x"
                                       f"{EVAL_SIZE}; before = the pretrained net with the predictor's vector, as "
                                       "painterly-arbitrary would paint it; gram: distance to the style, content: "
                                       "to the photo, both in MobileNetV2 features (live.train.style_tune.distances)"},
        "final_losses": losses, "parity_max_abs": parity}
    try:
        write_manifest(path, name=args.name, kind="image-to-image", tier="cpu",
                       **style_model_fields(names, "weight per style in controls.styles order; normalised by their "
                                            "sum inside the graph; they mix the tuned style vectors (all zero = "
                                            "unchanged image)"),
                       provenance=provenance, licence=LICENCE)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def main(args: argparse.Namespace, argv: list[str]) -> int:
    started = time.perf_counter()
    model, losses, held_out = tune(args)
    seconds = time.perf_counter() - started
    print(f"tuned {args.steps} steps in {seconds / 60:.1f} min; final "
          + ", ".join(f"{k} {v}" for k, v in losses.items()))
    before, after = held_out["before"], held_out["after"]
    for i, name in enumerate(style_groups(args.style_image)):
        print(f"{name}, on held-out images, before -> after: Gram distance to the style {before['gram'][i]} -> "
              f"{after['gram'][i]}, content distance to the photo {before['content'][i]} -> {after['content'][i]}")
    if args.export:
        print(f"exported {export(model, args, argv, losses, held_out, seconds)}")
    return 0
