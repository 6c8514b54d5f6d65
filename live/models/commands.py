"""`live models`: list, verify, import and report on the models in exported_models/.

Every model, shipped or imported, is an .onnx file plus its manifest, so these commands read manifests only and
never special-case a model by name.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from live.errors import LiveError
from live.models.build import EXPORTED
from live.models.manifest import load_manifest, manifest_paths


def _summary(controls: dict) -> str:
    if "styles" in controls:
        return f"styles ({len(controls['styles'])}): {', '.join(controls['styles'])}"
    def short(value: object) -> str:
        if isinstance(value, dict):  # named entries (a decoder's presets): their names
            return f"({len(value)}: {', '.join(map(str, value))})"
        if not isinstance(value, list):
            return str(value)
        flat = all(not isinstance(v, (list, dict)) for v in value)
        return "/".join(map(str, value)) if flat and len(value) <= 8 else f"({len(value)} values)"

    shown = [f"{key} {short(v)}" for key, v in controls.items()]
    return "controls: " + ", ".join(shown) if shown else "no controls"


def list_models(models_dir: Path) -> int:
    """One block per manifest; a manifest that cannot be read is named with its problem (exit 1)."""
    manifests = manifest_paths(models_dir)
    if not manifests:
        print(f"No models in {models_dir} (run `make models`, or `live models import FILE.onnx --preset ...`)")
        return 0
    failed = 0
    rows = []
    for path in manifests:
        try:
            m = load_manifest(path, check_hash=False)
        except LiveError as err:
            failed += 1
            rows.append((path.stem, "?", "?", "?", "?", f"unreadable: {err.what.splitlines()[0][:160]}", ""))
            continue
        size = f"{m.onnx_path.stat().st_size / 1e6:.3g} MB"
        made = m.provenance.get("command") or m.provenance.get("imported_from", "")
        rows.append((m.name, m.kind, m.tier, size, m.licence, _summary(m.controls), made))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for name, kind, tier, size, licence, summary, made in rows:
        cells = (name, kind, tier, size)
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths)) + f"  licence: {licence}")
        print(f"    {summary}")
        if made:
            print(f"    made by: {made}")
    return 1 if failed else 0


def verify_models(models_dir: Path, names: list[str]) -> int:
    """One line per model, `ok` or the problem with its fix; exit 1 if any failed."""
    from live.models.verify import Result, verify

    paths = [models_dir / f"{n}.json" if not n.endswith((".json", ".onnx")) else Path(n) for n in names]
    results = []
    if not names:
        paths = manifest_paths(models_dir)
        described = {p.with_suffix(".onnx") for p in paths}
        results += [Result(p.stem, f"{p} has no manifest {p.with_suffix('.json').name} beside it (fix: import it "
                                   "with `live models import`, or delete it)")
                    for p in sorted(models_dir.glob("*.onnx")) if p not in described]
    results += [verify(p) for p in paths]
    for result in sorted(results, key=lambda r: r.name):
        print(result.line())
    if not results:
        print(f"No models in {models_dir}")
    return 1 if any(r.problem for r in results) else 0


def _import(args: argparse.Namespace, argv: list[str]) -> int:
    from live.models.importer import import_model

    out = import_model(args.file, args.preset, args.out or args.dir, name=args.name, styles=args.styles,
                       licence=args.licence, force=args.force, command=shlex.join(["live", "models", *argv]))
    print(f"Imported {args.file} as {out.with_suffix('.onnx')} (manifest {out.name}); "
          f"play it with [video] model = \"{out}\"")
    return 0


def _report(args: argparse.Namespace) -> int:
    from live.models.report import TIER_SCALE, write_report

    out = args.out or args.dir / "report"
    report = write_report(args.dir, out, names=args.model or None, width=args.width, height=args.height,
                          frames=args.frames, styles=args.style or None,
                          tier_scale=TIER_SCALE if args.tier_scale is None else args.tier_scale, say=print)
    print(f"Wrote {out / 'report.md'}, {out / 'report.json'} and a sheet per model "
          f"({', '.join(report['models'])})")
    return 0


def parser() -> argparse.ArgumentParser:
    from live.models.importer import DEFAULT_LICENCE, PRESETS

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", type=Path, default=EXPORTED, help="models folder (default: %(default)s)")
    top = argparse.ArgumentParser(prog="live models", description="List (the default), verify, import and report "
                                                                  "on the models in exported_models/.")
    top.set_defaults(command="list", dir=EXPORTED)
    sub = top.add_subparsers(dest="command")
    sub.add_parser("list", parents=[common], help="name, kind, tier, size, styles or controls, licence, provenance")

    verify = sub.add_parser("verify", parents=[common],
                            help="check hashes, graph vs manifest, and one run on ONNX Runtime CPU")
    verify.add_argument("names", nargs="*", metavar="NAME", help="models to check (default: all)")

    imp = sub.add_parser("import", parents=[common], help="wrap a foreign style network in our frame contract")
    imp.add_argument("file", type=Path, metavar="FILE.onnx")
    imp.add_argument("--preset", required=True, choices=sorted(PRESETS),
                     help="; ".join(f"{k}: {p.doc}" for k, p in PRESETS.items()))
    imp.add_argument("--name", help="model name (default: the file's name)")
    imp.add_argument("--styles", nargs="+", metavar="LABEL", help="the style's label (default: the name)")
    imp.add_argument("--licence", default=DEFAULT_LICENCE, help="the model's licence (default: %(default)s)")
    imp.add_argument("--out", type=Path, help="write here instead of the models folder")
    imp.add_argument("--force", action="store_true", help="replace a model of the same name")

    report = sub.add_parser("report", parents=[common],
                            help="every style model on real photos: sheets and metrics in pretrained feature space")
    report.add_argument("--out", type=Path, help="report folder (default: <models folder>/report)")
    report.add_argument("--model", nargs="+", action="extend", metavar="NAME", help="only these models")
    report.add_argument("--style", nargs="+", action="extend", metavar="NAME", help="only these styles")
    report.add_argument("--width", type=int, default=480, help="photo width (default: %(default)s)")
    report.add_argument("--height", type=int, default=360, help="photo height (default: %(default)s)")
    report.add_argument("--frames", type=int, default=16, help="frames in the moving test clip (default: %(default)s)")
    report.add_argument("--tier-scale", type=float, metavar="SCALE",
                        help="the CPU tier's internal scale, compared with the naive baseline (default: 0.25)")
    return top


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.command == "verify":
        return verify_models(args.dir, args.names)
    if args.command == "import":
        return _import(args, argv)
    if args.command == "report":
        return _report(args)
    return list_models(args.dir)
