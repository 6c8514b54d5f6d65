"""`live train style`: train the multi-style CIN network on data we make, and export it as a shippable model.

Each step stylizes a batch of augmented content crops, sample i with style (step * batch + i) mod N, so every
style gets the same number of updates and the shared layers learn from all of them. Same seed, same result.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.export import Dim

from live.errors import LiveError
from live.models.build_styles import STYLES
from live.models.manifest import style_model_fields, write_manifest
from live.train.export import command_line, export_onnx
from live.train.style_data import augment_batch, content_pool, style_images
from live.train.style_loss import StyleLoss, load_vgg
from live.train.style_net import N_STYLES, StyleModel, make_net

CONTENT_SCENES = 64
LOG_EVERY = 25
EXPORT_EXAMPLE = (96, 128)  # H, W traced at export
EXPORT_CHECK = (120, 200)  # a different H, W checked on ONNX Runtime: proves the axes are really dynamic
PARITY_TOLERANCE = 1.0  # grey levels: the uint8 output may round differently by one where torch and ORT differ
ARCHITECTURES = {
    "cpu": "GridNet: CIN U-Net (16/32/64 ch, 3 depthwise-separable residual blocks) at 1/4 resolution predicting "
           "per-pixel affine transforms of [r, g, b, detail, 1], upsampled bilinearly and applied at full resolution",
    "gpu": "TransformerNet with CIN (32/64/128 ch, 5 residual blocks) at full resolution",
}
assert len(STYLES) == N_STYLES


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="live train style", description=__doc__.splitlines()[0])
    p.add_argument("--tier", choices=("cpu", "gpu"), default="cpu",
                   help="cpu: low-res grid net for 24 fps on 2 cores; gpu: full-res TransformerNet")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--size", type=int, default=128, help="training crop side, pixels")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--minutes", type=float, default=0.0,
                   help="stop early after this much training time (0: no limit); the steps done are recorded")
    p.add_argument("--out", type=Path, default=Path("exported_models"))
    p.add_argument("--export", action="store_true", help="write <out>/styles-<tier>.onnx and its manifest")
    p.add_argument("--vgg", type=Path, help="torchvision VGG16/19 state_dict: use its Gram loss instead of ours")
    p.add_argument("--style-image", action="append", default=[], metavar="NAME=PATH",
                   help=f"your image for a style instead of the generated one; names: {', '.join(STYLES)}")
    p.add_argument("--content", type=Path, help="folder of your photos instead of generated scenes")
    args = p.parse_args(argv)
    if args.steps < 1 or args.size < 32 or args.batch < 1:
        raise LiveError("--steps must be >= 1, --size >= 32 and --batch >= 1", "fix the arguments")
    return args


def user_styles(pairs: list[str]) -> dict[str, Path]:
    out = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or name not in STYLES:
            raise LiveError(f"--style-image {pair!r} is not NAME=PATH with a known style name",
                            f"use one of: {', '.join(STYLES)}")
        out[name] = Path(path)
    return out


def train(args: argparse.Namespace) -> tuple[torch.nn.Module, dict[str, float], int]:
    """Train; return the net, the final losses (mean of the last LOG_EVERY steps) and the steps done."""
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    styles = [torch.from_numpy(img).permute(2, 0, 1).contiguous()
              for img in style_images(STYLES, args.seed, user_styles(args.style_image))]
    pool = content_pool(args.seed, CONTENT_SCENES, args.content)
    loss_fn = StyleLoss(styles, load_vgg(args.vgg) if args.vgg else None)
    net = make_net(args.tier).train()
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps, eta_min=args.lr * 0.1)
    eye = torch.eye(N_STYLES)
    window: list[dict[str, float]] = []
    started = tick = time.perf_counter()
    step = 0
    while step < args.steps:
        content = augment_batch(pool, args.batch, args.size, gen)
        index = (step * args.batch + torch.arange(args.batch)) % N_STYLES
        terms = loss_fn(net(content, eye[index]), content, index, gen)
        total = sum(terms.values())
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        sched.step()
        step += 1
        window = (window + [{"total": total.item(), **{k: v.item() for k, v in terms.items()}}])[-LOG_EVERY:]
        out_of_time = args.minutes > 0 and time.perf_counter() - started > args.minutes * 60
        if step % LOG_EVERY == 0 or step == args.steps or out_of_time:
            now = time.perf_counter()
            done = step % LOG_EVERY or LOG_EVERY
            means = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
            print(f"step {step}/{args.steps}  " + "  ".join(f"{k} {v:.4f}" for k, v in means.items())
                  + f"  {(now - tick) / done:.2f} s/step", flush=True)
            tick = now
        if out_of_time:
            print(f"stopping at step {step}: --minutes {args.minutes:g} reached", flush=True)
            break
    means = {k: round(sum(w[k] for w in window) / len(window), 5) for k in window[0]}
    return net.eval(), means, step


def export(net: torch.nn.Module, args: argparse.Namespace, argv: list[str], losses: dict[str, float],
           steps: int, seconds: float) -> Path:
    """Write <out>/styles-<tier>.onnx and its manifest; on any failure neither is left behind half-written."""
    model = StyleModel(net).eval()

    def inputs(h: int, w: int) -> tuple[torch.Tensor, ...]:
        gen = torch.Generator().manual_seed(h * w)
        frame = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=gen)
        return frame, torch.tensor([0.0, 0.7, 0.3, 0, 0, 0, 0, 0]), torch.tensor([0.8])

    path = args.out / f"styles-{args.tier}.onnx"
    dims = {"frame": {0: Dim("H", min=16, max=4096), 1: Dim("W", min=16, max=4096)},
            "style_weights": None, "strength": None}
    parity = export_onnx(model, inputs(*EXPORT_EXAMPLE), path, ["frame", "style_weights", "strength"],
                         ["frame_out"], dynamic_shapes=dims, check=inputs(*EXPORT_CHECK), tolerance=PARITY_TOLERANCE)
    data = ("generated style images (live.train.style_data)" if not args.style_image
            else f"style images: {', '.join(args.style_image)} (others generated)")
    data += "; " + (f"content photos from {args.content}" if args.content
                    else f"{CONTENT_SCENES} generated content scenes, augmented")
    provenance = {"command": command_line("style", argv), "data": data, "seed": args.seed, "steps": steps,
                  "train_seconds": round(seconds), "crop": args.size, "batch": args.batch,
                  "loss": f"VGG Gram ({args.vgg.name})" if args.vgg else "random-feature Gram banks",
                  "architecture": ARCHITECTURES[args.tier], "final_losses": losses, "parity_max_abs": parity}
    if args.tier == "gpu":
        provenance["note"] = (f"trained on a CPU for only {steps} steps; retrain on a GPU "
                              "(e.g. --steps 20000 --size 256) for the quality this tier is meant for")
    try:
        write_manifest(
            path, name=f"styles-{args.tier}", kind="image-to-image", tier=args.tier,
            **style_model_fields(list(STYLES), "weight per style in controls.styles order; normalised by their "
                                 "sum inside the graph, which blends the per-style normalisation parameters (all "
                                 "zero = unchanged image)"),
            provenance=provenance, licence="MIT")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    net, losses, steps = train(args)
    seconds = time.perf_counter() - started
    print(f"trained {steps} steps in {seconds / 60:.1f} min; final " + ", ".join(f"{k} {v}" for k, v in losses.items()))
    if args.export:
        print(f"exported {export(net, args, argv, losses, steps, seconds)}")
    return 0
