"""`live train latent`: a small VAE on our own abstract-image corpus, exported as a latent -> image decoder.

The player's latent layer only needs the decoder, so only the decoder ships, with the post-processing inside the
graph: a float32 latent [B, 16] in, display-ready uint8 BGR [B, S, S, 3] out. The VAE is 128 px (about 20 minutes
on one CPU core); the decoder is wide at 16x16 and 32x32 and narrow at 64x64, the last doubling a pixel shuffle, so
it decodes in a few milliseconds.

A 16-d VAE's image is a soft colour field, blurry blobs once enlarged to a projector. `--levels N` appends `Bands`
to the exported graph: the field enlarged to `--out-size` and cut into flat colour bands with one-pixel edges, a
cut-paper print that is sharp at output size and still moves smoothly (edges slide, nothing snaps). `--decoder`
takes the decoder of an exported model instead of training one, so the shipped `latent-sharp` is the shipped
`latent-vae`'s decoder plus bands, built in seconds and recorded as such in its manifest.

Loss per image, each term summed over pixels (reconstruction) or latent dims (KL):
    L1 + edge * L1 of image gradients + colour * (channel mean and contrast errors) * pixels
       + layout * L1 of 8x8 cell means * cell area + beta * KL,
with beta ramped up from 0 over the first quarter of training so the encoder learns to use the latent before it is
pulled towards the prior. Colour needs the colour and layout terms, He initialisation and a light edge weight:
without them the decoder stays grey for most of a CPU budget (it learns brightness first, and the per-pixel L1 of
an uncertain decoder settles on the median, which over images of every hue is grey).

`train` is a pure function of its arguments (live.train.seeding.reproducible fixes seeds, threads and kernels), so
the command in the manifest rebuilds the same .onnx byte for byte on the same kind of machine. The manifest also
records the two directions in which the training images' latent codes vary most (PCA), so the player's x/y control
plane moves along directions that visibly change the image.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
import torch
from torch import nn
from torch.nn import functional as F

from live.errors import LiveError
from live.models.manifest import TensorSpec, load_manifest, write_manifest
from live.train.export import command_line, export_onnx
from live.train.latent_data import RECIPE, corpus
from live.train.seeding import TRAIN_THREADS, reproducible

LATENT = 16
NAME = "latent-vae"
BETA = 1.0


def act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


class Encoder(nn.Module):
    """Image [B, 3, S, S] in 0..1 -> (mean, log-variance) of the latent: pixel-unshuffled to 32x32 (the latent needs
    no finer detail than that, and it is what keeps 128 px cheap), then strided convs to 8x8."""

    def __init__(self, size: int, width: int = 32) -> None:
        super().__init__()
        fold = size // 32
        self.body = nn.Sequential(
            nn.PixelUnshuffle(fold), nn.Conv2d(3 * fold * fold, 2 * width, 3, padding=1), act(),
            nn.Conv2d(2 * width, 4 * width, 4, stride=2, padding=1), act(),
            nn.Conv2d(4 * width, 4 * width, 4, stride=2, padding=1), act(), nn.Flatten())
        self.head = nn.Linear(4 * width * 64, 2 * LATENT)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.head(self.body(x * 2 - 1)).chunk(2, dim=1)  # centred input: colour is learnt sooner
        return mean, logvar.clamp(-10, 2)


# Decoder channels per width unit at each side it works at, and how many convs there: wide where pixels are few,
# narrow and single at 64x64, where a 128 px model spends most of its time.
DECODER_STAGES = {16: (3.0, 2), 32: (1.5, 2), 64: (0.5, 1)}


class Decoder(nn.Module):
    """Latent [B, 16] -> image [B, 3, S, S] in 0..1: an 8x8 seed grown by upsample+conv to S/2, pixel-shuffled at the
    end (the last doubling costs a 12-channel conv at half resolution instead of a full-resolution layer)."""

    def __init__(self, size: int, width: int = 32) -> None:
        super().__init__()
        self.seed_channels = channels = 4 * width
        self.fc = nn.Linear(LATENT, channels * 64)
        layers: list[nn.Module] = []
        side = 16
        while side < size:
            scale, convs = DECODER_STAGES[side]
            out = int(scale * width)
            layers += [nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(channels, out, 3, padding=1), act()]
            for _ in range(convs - 1):
                layers += [nn.Conv2d(out, out, 3, padding=1), act()]
            channels, side = out, side * 2
        layers += [nn.Conv2d(channels, 12, 3, padding=1), nn.PixelShuffle(2)]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.fc(z), 0.2).view(-1, self.seed_channels, 8, 8)
        return torch.sigmoid(self.body(x))


SMOOTH_SIGMA = 1.5  # decoder pixels: the decoder's pixel grain, smoothed away before bands would magnify it
CONTRAST = 0.25  # the field's std is stretched to about this (a VAE's field is washed out), means kept
FLAT = 0.0125  # added to the std before stretching: a nearly flat image is not stretched into noise
EDGE_FLOOR = 0.01  # narrowest edge ramp in band units: where the field is flat a band fades over 1 % of a band's
#                    change instead of flipping a whole region at once, so a walk never jumps


class Bands(nn.Module):
    """Image [B, 3, s, s] in 0..1 -> [B, 3, height, width] in 0..levels: sharp at output size, smooth in time.

    The decoder's colour field is smoothed, cropped to the output's aspect, its contrast stretched per image and
    channel, then enlarged bilinearly and each channel cut into `levels` flat bands. Each band edge is a ramp as
    wide as the field's own change per output pixel (as signed-distance text rendering anti-aliases its edges), so
    edges are one pixel wide at any size; a latent step moves the field a little and so slides the edges a little.
    All but the banding itself runs at the decoder's size: at 640x480 the graph costs a few element-wise ops."""

    def __init__(self, size: tuple[int, int], levels: int) -> None:
        super().__init__()
        self.size, self.levels = size, levels
        taps = torch.exp(-torch.arange(-3.0, 4.0) ** 2 / (2 * SMOOTH_SIGMA ** 2))
        self.register_buffer("taps", (taps / taps.sum()).view(1, 1, 1, 7).repeat(3, 1, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        width, height = self.size
        side = image.shape[-1]
        rows = round(side * height / width)
        top = (side - rows) // 2
        x = F.pad(image, (3, 3, 3, 3), mode="replicate")
        x = F.conv2d(F.conv2d(x, self.taps, groups=3), self.taps.transpose(2, 3), groups=3)[..., top:top + rows, :]
        mean = x.mean(dim=(2, 3), keepdim=True)
        spread = x.std(dim=(2, 3), keepdim=True)
        t = ((x - mean) * (CONTRAST / (spread + FLAT)) + mean).clamp(0, 1) * self.levels
        p = F.pad(t, (1, 1, 1, 1), mode="replicate")
        slope = torch.sqrt((p[..., 1:-1, 2:] - p[..., 1:-1, :-2]) ** 2 + (p[..., 2:, 1:-1] - p[..., :-2, 1:-1]) ** 2)
        sharpness = 1 / (slope * (side / width / 2)).clamp_min(EDGE_FLOOR)  # per output pixel: 1 / ramp width
        # by constant scales, not sizes: ORT's Resize takes a fast path then (sizes computed in a graph with a
        # dynamic batch made it several times slower); the half pixel more makes floor(rows * scale) = height
        scale = ((height + 0.5) / rows, (width + 0.5) / side)
        t = F.interpolate(t, scale_factor=scale, mode="bilinear", align_corners=False)
        sharpness = F.interpolate(sharpness, scale_factor=scale, mode="nearest")  # cheaper; smooth enough
        band = torch.floor(t)
        return band + ((t - band - 0.5) * sharpness + 0.5).clamp(0, 1)  # in bands: the caller scales once


class ShippedDecoder(nn.Module):
    """The exported graph: latent -> uint8 BGR HWC (through `bands` when given), so the player does no per-pixel
    work. The corpus is BGR already, so channels pass straight through."""

    def __init__(self, decoder: Decoder, bands: Bands | None = None) -> None:
        super().__init__()
        self.decoder, self.bands = decoder, bands

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        image = self.decoder(latent)
        if self.bands is None:
            return torch.floor(image.permute(0, 2, 3, 1) * 255 + 0.5).to(torch.uint8)
        # values are >= 0, so the cast's truncation rounds; casting before the transpose moves bytes, not floats
        return (self.bands(image) * (255 / self.bands.levels) + 0.5).to(torch.uint8).permute(0, 2, 3, 1)


def decoder_from(manifest_path: Path) -> tuple[Decoder, dict]:
    """The torch decoder inside an exported latent model (its weights are the graph's named initialisers), and the
    manifest's fields that describe it; LiveError naming the file if it is not a plain latent-vae export."""
    manifest = load_manifest(manifest_path)
    if manifest.kind != "latent-to-image":
        raise LiveError(f"{manifest_path} is a {manifest.kind} model, not a latent-to-image one",
                        "pass a latent model's manifest to --decoder, e.g. exported_models/latent-vae.json")
    if manifest.provenance.get("levels"):
        raise LiveError(f"{manifest_path} already ends in bands ({manifest.provenance['levels']} levels)",
                        "pass the manifest of the model it was built from, e.g. exported_models/latent-vae.json")
    weights = {i.name[len("decoder."):]: torch.from_numpy(numpy_helper.to_array(i).copy())
               for i in onnx.load(str(manifest.onnx_path)).graph.initializer if i.name.startswith("decoder.")}
    try:
        decoder = Decoder(int(manifest.controls["size"][0]), width=weights["fc.weight"].shape[0] // 256)
        decoder.load_state_dict(weights)
    except (KeyError, RuntimeError) as err:
        raise LiveError(f"{manifest.onnx_path} does not hold a decoder as `live train latent` exports it "
                        f"({str(err)[:120]})", "pass a model exported without --levels (e.g. latent-vae)") from None
    described = {"model": manifest.name, "sha256": manifest.sha256, "command": manifest.provenance.get("command")}
    return decoder.eval(), {"plane": manifest.controls["plane"], "decoder": described}


class VAE(nn.Module):
    def __init__(self, size: int, width: int = 32) -> None:
        super().__init__()
        self.encoder, self.decoder = Encoder(size, width), Decoder(size, width)
        # He initialisation for the leaky ReLUs: with torch's default the signal shrinks layer by layer, and the net
        # learns only the mean image's brightness for hundreds of steps (grey output). The posterior starts narrow
        # (log-variance near -4) so early reconstructions are not drowned in sampling noise.
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, a=0.2)
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.encoder.head.bias[LATENT:] = -4.0
            # ICNR: the four sub-pixels of each output colour start equal, so the pixel shuffle shows no grid.
            last = self.decoder.body[-2].weight
            last.copy_(last[::4].repeat_interleave(4, dim=0))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, logvar = self.encoder(x)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)
        return self.decoder(z), mean, logvar


def colour_stats(x: torch.Tensor) -> torch.Tensor:
    """Per image and channel: mean and standard deviation over the pixels, [B, 2, C]."""
    flat = x.flatten(2)
    return torch.stack([flat.mean(dim=2), flat.std(dim=2)], dim=1)


def losses(model: VAE, x: torch.Tensor, beta: float, colour: float = 1.0,
           edge: float = 0.2, layout: float = 1.0) -> dict[str, torch.Tensor]:
    """Per-image sums, averaged over the batch; "total" is what is minimised. The colour term weighs each channel's
    mean and contrast error by the pixel count, like an L1 error of that size everywhere: a plain L1 loss lets an
    uncertain decoder settle on the per-pixel median, which for images of every hue is grey."""
    y, mean, logvar = model(x)
    l1 = (y - x).abs().sum(dim=(1, 2, 3)).mean()
    edges = sum((y.diff(dim=d) - x.diff(dim=d)).abs().sum(dim=(1, 2, 3)).mean() for d in (2, 3))
    tint = (colour_stats(y) - colour_stats(x)).abs().sum(dim=(1, 2)).mean() * x[0, 0].numel()
    cell = x.shape[-1] // 8
    coarse = (F.avg_pool2d(y, cell) - F.avg_pool2d(x, cell)).abs().sum(dim=(1, 2, 3)).mean() * cell * cell
    kl = (0.5 * (mean ** 2 + logvar.exp() - 1 - logvar)).sum(dim=1).mean()
    return {"total": l1 + edge * edges + colour * tint + layout * coarse + beta * kl, "l1": l1, "edges": edges,
            "colour": tint, "layout": coarse, "kl": kl}


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 BGR NHWC -> float 0..1 NCHW."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)


def train(images: np.ndarray, steps: int, batch: int, seed: int, beta: float = BETA, lr: float = 1.5e-3,
          width: int = 32, colour: float = 1.0, edge: float = 0.2, layout: float = 1.0,
          threads: int = TRAIN_THREADS, say=print, every: int = 50) -> tuple[VAE, dict[str, float]]:
    """Train a VAE on `images` (uint8 NHWC BGR, random horizontal flips); returns it and the last losses (mean over
    the final `every` steps, per image). A pure function of its arguments: the same call gives the same weights."""
    generator = reproducible(seed, threads)
    model = VAE(images.shape[1], width)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.1)
    warmup = max(1, steps // 4)  # KL weight ramps 0 -> beta: the latent is put to use before the prior pulls on it
    recent: dict[str, list[float]] = {}
    started = time.perf_counter()
    for step in range(1, steps + 1):
        pick = torch.randint(0, len(images), (batch,), generator=generator).numpy()
        x = to_tensor(images[pick])
        flip = torch.rand(batch, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        parts = losses(model, x, beta * min(1.0, step / warmup), colour, edge, layout)
        optimiser.zero_grad(set_to_none=True)
        parts["total"].backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1000.0)  # only a rare wild batch: the sums make norms large
        optimiser.step()
        schedule.step()
        for key, value in parts.items():
            recent.setdefault(key, []).append(float(value.detach()))
            del recent[key][:-every]
        if step % every == 0 or step == steps:
            means = {k: sum(v) / len(v) for k, v in recent.items()}
            say(f"step {step}/{steps}  loss {means['total']:.0f}  l1/px {means['l1'] / x[0].numel():.4f}  "
                f"edges {means['edges']:.0f}  colour {means['colour']:.0f}  kl {means['kl']:.1f}  "
                f"{time.perf_counter() - started:.0f} s", flush=True)
    model.eval()
    return model, {k: round(sum(v) / len(v), 4) for k, v in recent.items()}


def latent_plane(model: VAE, images: np.ndarray) -> list[list[float]]:
    """The two orthonormal directions of greatest spread of the images' latent means (PCA)."""
    with torch.no_grad():
        means = torch.cat([model.encoder(to_tensor(images[i:i + 64]))[0] for i in range(0, len(images), 64)])
    centred = means - means.mean(dim=0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return [[round(float(v), 6) for v in row] for row in vh[:2]]


def export(decoder: Decoder, size: tuple[int, int], plane: list[list[float]], out: Path, provenance: dict,
           levels: int = 0, name: str = NAME) -> Path:
    """Write `<out>/<name>.onnx` (the decoder, then `Bands` at `size` (w, h) when `levels` > 0) and its
    manifest; returns the manifest path."""
    shipped = ShippedDecoder(decoder, Bands(size, levels) if levels else None).eval()
    generator = torch.Generator().manual_seed(0)
    example = (torch.randn(1, LATENT, generator=generator),)
    check = (torch.randn(3, LATENT, generator=generator),)
    batch = torch.export.Dim("B", min=1, max=64)
    path = out / f"{name}.onnx"
    # Rounding to uint8 can flip one grey level where torch and ORT differ in the last float bit.
    parity = export_onnx(shipped, example, path, ["latent"], ["frame"], dynamic_shapes=({0: batch},), check=check,
                         tolerance=1.0)
    return write_manifest(
        path, name=name, kind="latent-to-image", tier="cpu", licence="MIT",
        inputs=[TensorSpec(name="latent", dtype="float32", shape=["B", LATENT], layout="NC",
                           doc="latent code; the prior is N(0, 1) per dimension")],
        outputs=[TensorSpec(name="frame", dtype="uint8", shape=["B", size[1], size[0], 3], layout="NHWC", color="BGR",
                            range=(0, 255), doc="generated image, display-ready")],
        controls={"latent": LATENT, "size": list(size), "plane": plane},
        provenance={**provenance, "parity_max_abs_diff_grey_levels": parity})


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="live train latent",
                                description="Train the latent-space image VAE on a generated abstract-image corpus.")
    p.add_argument("--steps", type=int, default=2000, help="optimiser steps (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="corpus and training seed (default %(default)s)")
    p.add_argument("--size", type=int, default=128, choices=(32, 64, 128),
                   help="image side in pixels (default %(default)s)")
    p.add_argument("--batch", type=int, default=16, help="images per step (default %(default)s)")
    p.add_argument("--images", type=int, default=4096, help="corpus size (default %(default)s)")
    p.add_argument("--beta", type=float, default=BETA, help="KL weight after warm-up (default %(default)s)")
    p.add_argument("--colour", type=float, default=1.0,
                   help="weight of the per-image colour mean/contrast term (default %(default)s)")
    p.add_argument("--edge", type=float, default=0.2,
                   help="weight of the image-gradient L1 term (default %(default)s; high early weights keep "
                        "the output grey)")
    p.add_argument("--layout", type=float, default=1.0,
                   help="weight of the L1 term on 8x8 cell means: the coarse composition (default %(default)s)")
    p.add_argument("--lr", type=float, default=1.5e-3, help="peak learning rate (default %(default)s)")
    p.add_argument("--threads", type=int, default=TRAIN_THREADS,
                   help="torch CPU threads; part of the recipe, as it changes the last bits (default %(default)s)")
    p.add_argument("--levels", type=int, default=0,
                   help="colour bands per channel, sharp at --out-size (0 = the decoder's own soft image; "
                        "default %(default)s)")
    p.add_argument("--out-size", type=int, nargs=2, default=(640, 480), metavar=("W", "H"),
                   help="exported image size with --levels, the show's output size (default 640 480)")
    p.add_argument("--decoder", type=Path, metavar="MANIFEST",
                   help="take the decoder of this exported latent model instead of training one (no training)")
    p.add_argument("--out", type=Path, default=Path("exported_models"), help="where --export writes the model")
    p.add_argument("--export", action="store_true", help="export the decoder and its manifest to --out")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    name = "latent-sharp" if args.levels else NAME
    if args.decoder:
        if not (args.levels and args.export):
            raise LiveError(f"--decoder {args.decoder} trains nothing: it only adds bands to that decoder",
                            "add --levels N --export (e.g. --levels 4)")
        decoder, described = decoder_from(args.decoder)
        manifest = export(decoder, tuple(args.out_size), described["plane"], args.out,
                          {"command": command_line("latent", argv), "decoder": described["decoder"],
                           "levels": args.levels, "train_minutes": 0.0}, args.levels, name)
        print(f"Wrote {manifest} and {manifest.with_suffix('.onnx')}")
        return 0
    started = time.perf_counter()
    images = corpus(args.seed, args.images, args.size)
    print(f"Corpus: {len(images)} images of {args.size} px from seed {args.seed} "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    model, final = train(images, args.steps, args.batch, args.seed, beta=args.beta, lr=args.lr, colour=args.colour,
                         edge=args.edge, layout=args.layout, threads=args.threads)
    minutes = (time.perf_counter() - started) / 60
    print(f"Trained {args.steps} steps in {minutes:.1f} min: {final}")
    if args.export:
        size = tuple(args.out_size) if args.levels else (args.size, args.size)
        manifest = export(model.decoder, size, latent_plane(model, images), args.out, {
            "command": command_line("latent", argv), "data": RECIPE, "images": args.images, "seed": args.seed,
            "steps": args.steps, "batch": args.batch, "beta": args.beta, "colour": args.colour, "edge": args.edge,
            "layout": args.layout, "lr": args.lr, "threads": args.threads, "final_losses_per_image": final,
            "levels": args.levels, "train_minutes": round(minutes, 1)}, args.levels, name)
        print(f"Wrote {manifest} and {manifest.with_suffix('.onnx')}")
    return 0
