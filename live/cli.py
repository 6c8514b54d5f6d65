"""The `live` command: run, params, styles, doctor, bench, soak.

Every user-facing failure is a LiveError printed as one message with its fix; an unexpected error is summarised in
one line too (LIVE_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from live.errors import LiveError
from live.show import DEFAULT_SHOW, load_show

VJ_SHOW = DEFAULT_SHOW.parent / "vj.toml"  # `live bench --audio`'s show: MIDI, a fullscreen window, the synth


def _run(args: argparse.Namespace) -> int:
    from live.player import Player
    from live.stdio import console

    show = load_show(args.show)
    if args.for_seconds is not None and args.for_seconds <= 0:
        raise LiveError(f"--for {args.for_seconds}: the duration must be positive", "give seconds, e.g. --for 10")
    say = console()  # the show's threads speak while a model loads with stdout set aside: lines must not vanish
    say(f"Show: {show.name} ({show.path})")
    player = Player(show, source=args.source, record=args.record, window=False if args.no_window else None, say=say)
    player.start()
    say("Playing" + (f" for {args.for_seconds:g} s" if args.for_seconds else "; Ctrl-C (or Esc in the window) stops"))
    summary = player.run(args.for_seconds)
    say(summary.line())
    return 0


def _params(args: argparse.Namespace) -> int:
    from live.graph import build

    items = build(load_show(args.show), window=False, say=lambda _: None).tree.describe()
    if args.json:
        print(json.dumps(items, indent=2))
        return 0
    print(params_table(items))
    return 0


def params_table(items: list[dict]) -> str:
    """The parameter list as a Markdown table (README carries the same table)."""
    rows = ["| address | type | range | default | unit | what |", "|---|---|---|---|---|---|"]
    for p in items:
        if p["type"] == "event":
            kind = "event (" + ", ".join(f"{a['name']}: {a['type']}" for a in p["args"]) + ")"
            span = "; ".join(f"{a['name']} {a['min']:g}–{a['max']:g}" for a in p["args"])
        elif p["type"] == "enum":
            kind, span = "enum", " / ".join(p["choices"])
        elif p["type"] == "bool":
            kind, span = "bool", "0–1"
        else:
            kind, span = p["type"], f"{p['min']:g}–{p['max']:g}"
        default = "" if p["default"] is None else str(p["default"]).lower() if isinstance(p["default"], bool) \
            else str(p["default"])
        rows.append(f"| `{p['address']}` | {kind} | {span} | {default} | {p['unit']} | {p['doc']} |")
    return "\n".join(rows)


def _check(args: argparse.Namespace) -> int:
    from live.graph import check

    show = load_show(args.show)  # syntax and keys: raises with file, line and key
    problems = check(show)
    for problem in problems:
        print(f"live check: {problem}", file=sys.stderr)
    if not problems:
        print(f"{show.path}: OK ({len(show.scenes)} scenes, {len(show.cues)} cues, {len(show.mod)} modulators)")
    return 1 if problems else 0


def _layout(args: argparse.Namespace) -> int:
    from live.control.layout import open_stage_control

    text = json.dumps(open_stage_control(load_show(args.show)), indent=1, ensure_ascii=False) + "\n"
    if args.out:
        Path(args.out).write_text(text)
        print(f"Wrote {args.out}: open it in Open Stage Control, sending to this machine's [osc] port")
    else:
        print(text, end="")
    return 0


def _learn(args: argparse.Namespace) -> int:
    """MIDI learn in a running show, over its OSC port: arm, then wait until a control is bound."""
    import socket
    import time

    from live.control.osc_codec import encode_message, parse_message

    def ask(sock: socket.socket, address: str, *values: str) -> tuple[str, str]:
        sock.sendto(encode_message(address, values), ("127.0.0.1", args.port))
        try:
            reply = parse_message(sock.recv(65536))
        except (TimeoutError, socket.timeout):
            raise LiveError(f"no show answered on OSC port {args.port}",
                            "start the show first (`live run SHOW`), or give its [osc] port with --port") from None
        return reply.address, str(reply.args[0]) if reply.args else ""

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(2.0)
        kind, text = ask(sock, "/live/learn", args.address)
        if kind == "/live/error":
            raise LiveError(text, "run `live params` for the addresses; set [midi] in the show")
        print(f"Move the MIDI control for {args.address} (Ctrl-C cancels)", flush=True)
        deadline = time.monotonic() + args.timeout
        try:
            while time.monotonic() < deadline:
                time.sleep(0.25)
                kind, text = ask(sock, "/live/learn/state")
                if not text.startswith("learning"):
                    print(text.removeprefix("idle ").strip() or f"bound {args.address}")
                    return 0
        except KeyboardInterrupt:
            pass
        ask(sock, "/live/learn")  # stop waiting
        print("MIDI learn cancelled: no control moved")
        return 1


def _service(args: argparse.Namespace) -> int:
    from live.service import install

    path, how = install(Path(args.show), Path(args.folder) if args.folder else None, args.watchdog)
    print(f"Wrote {path}: the show starts on boot, and restarts when it exits or stops sending frames for "
          f"{args.watchdog:g} s\nEnable it: {how}")
    return 0


def _supervise(args: argparse.Namespace) -> int:
    from live.service import Supervisor

    show = load_show(args.show)  # a show that does not load is said now, not restarted forever
    if args.stall <= 0:
        raise LiveError(f"--stall {args.stall}: must be positive", "give seconds, e.g. --stall 10")
    Supervisor(show.path, args.stall).run()
    return 0


def _map(args: argparse.Namespace) -> int:
    from live.control import learned_map

    show = load_show(args.show)
    if args.action == "train":
        print(learned_map.train_command(show))
    else:
        print("\n".join(learned_map.info_lines(show)))
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from live.doctor import report

    problems = report(print)
    return 1 if problems and args.strict else 0


def _lead(text: str) -> str | float:
    """--lead: "auto" or milliseconds."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither \"auto\" nor milliseconds (e.g. 5.4)") from None


def _bench(args: argparse.Namespace) -> int:
    if args.seconds is not None and args.seconds <= 0:
        raise LiveError(f"--seconds {args.seconds}: the duration must be positive", "give seconds, e.g. --seconds 5")
    if args.audio:
        from live.bench_audio import audio_bench, inputs_bench

        bench_of = inputs_bench if args.inputs else audio_bench
        result = bench_of(load_show(args.show or VJ_SHOW).path, args.seconds or 60.0, hog=args.hog, lead=args.lead)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
            print(f"Wrote {args.json}")
        return 0
    from live.bench import bench

    args.show = args.show or str(DEFAULT_SHOW)
    parts = (args.only,) if args.only else ("video", "synth")
    if args.control:
        parts = ((args.only,) if args.only else ()) + ("control",)
    if args.flicker is not None:
        parts = ((args.only,) if args.only else ()) + ("flicker",)
    if args.fuzz_packets < 0:
        raise LiveError(f"--fuzz-packets {args.fuzz_packets}: cannot be negative", "give a count, e.g. 100000")
    result = bench(load_show(args.show), seconds=args.seconds, print_=print, parts=parts,
                   fuzz_packets=args.fuzz_packets, flicker_models=[Path(m) for m in args.flicker or ()])
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"Wrote {args.json}")
    return 0


def _soak(args: argparse.Namespace) -> int:
    from live.soak import Soak, print_report

    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    faults = tuple(k for k in args.faults.split(",") if k)
    result = Soak(load_show(args.show).path, seconds, args.source, args.swap_model, faults=faults).run()
    print_report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"Wrote {args.json}")
    return 1 if args.strict and not result["pass"] else 0


def _styles(args: argparse.Namespace) -> int:
    from live.video import styles

    show = load_show(args.show)
    if args.action == "add":
        print(styles.add_command(show, args.name, [Path(p) for p in args.pictures]))
    elif args.action == "remove":
        print(styles.remove_command(show, args.name))
    else:
        print("\n".join(styles.list_lines(show)))
    return 0


def _models(args: argparse.Namespace) -> int:
    from live.models.commands import main as models_main

    return models_main(args.rest[1:] if args.rest[:1] == ["--"] else args.rest)


def _train(args: argparse.Namespace) -> int:
    import importlib

    try:
        module = importlib.import_module(f"live.train.{args.kind}")
    except ModuleNotFoundError as err:
        if err.name == "torch":
            raise LiveError("training needs PyTorch, which is not installed",
                            "install the training extra: .venv/bin/pip install -e '.[train]'") from None
        raise
    return module.main(args.rest)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="live", description="Real-time AI performance: stylized video and neural "
                                                           "synth, steered over OSC.")
    sub = top.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="play a show")
    run.add_argument("show", nargs="?", default=str(DEFAULT_SHOW), help="show file (default: %(default)s)")
    run.add_argument("--source", help="camera index, video file, URL or 'builtin' (overrides the show)")
    run.add_argument("--for", dest="for_seconds", type=float, metavar="SECONDS", help="play this long, then exit")
    run.add_argument("--record", type=Path, metavar="FILE.mp4", help="record the output video with its audio")
    run.add_argument("--no-window", action="store_true", help="no window (record or just run)")
    run.set_defaults(func=_run)

    params = sub.add_parser("params", help="list every parameter: OSC address, type, range, default, unit")
    params.add_argument("show", nargs="?", default=str(DEFAULT_SHOW))
    params.add_argument("--json", action="store_true", help="as a JSON list")
    params.set_defaults(func=_params)

    check = sub.add_parser("check", help="validate a show file (keys, values, models, scenes) without playing it")
    check.add_argument("show")
    check.set_defaults(func=_check)

    layout = sub.add_parser("layout", help="an Open Stage Control tablet layout for the show's mapped controls")
    layout.add_argument("show")
    layout.add_argument("--out", metavar="FILE.json", help="write it here instead of printing it")
    layout.set_defaults(func=_layout)

    learn = sub.add_parser("learn", help="MIDI learn in the running show: the next control moved binds to ADDRESS")
    learn.add_argument("address", help="parameter address, e.g. /video/blend")
    learn.add_argument("--port", type=int, default=9000, help="the show's [osc] port (default %(default)s)")
    learn.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a control")
    learn.set_defaults(func=_learn)

    learned = sub.add_parser("map", help="the show's learned mapping ([map]): train it again from its saved "
                                         "examples, or say what it holds")
    learned.add_argument("action", choices=("train", "info"))
    learned.add_argument("show")
    learned.set_defaults(func=_map)
    service = sub.add_parser("service", help="install the show as a systemd user service: started on boot, "
                                             "restarted when it exits or hangs (watchdog)")
    service.add_argument("action", choices=("install",))
    service.add_argument("show")
    service.add_argument("--folder", help="where the unit goes (default ~/.config/systemd/user)")
    service.add_argument("--watchdog", type=float, default=10.0, metavar="S",
                         help="restart the show when no frame has gone out for S seconds (default %(default)s)")
    service.set_defaults(func=_service)
    supervise = sub.add_parser("supervise", help="play the show as a child and restart it when it exits or stops "
                                                 "sending frames, backing off when it keeps failing (where there "
                                                 "is no systemd)")
    supervise.add_argument("show")
    supervise.add_argument("--stall", type=float, default=10.0, metavar="S",
                           help="restart when no frame has gone out for S seconds (default %(default)s)")
    supervise.set_defaults(func=_supervise)

    doctor = sub.add_parser("doctor", help="check providers, cameras, audio, MIDI and display, with fixes")
    doctor.add_argument("--strict", action="store_true", help="exit 1 if anything is missing")
    doctor.set_defaults(func=_doctor)

    bench = sub.add_parser("bench", help="measure video model, pipeline and naive-loop speed and latency, and the "
                                         "synth's cost per block")
    bench.add_argument("show", nargs="?", help=f"show file (default {DEFAULT_SHOW.name}; with --audio "
                                               f"{VJ_SHOW.name})")
    bench.add_argument("--seconds", type=float, default=None,
                       help="seconds per video measurement; each of the four synth measurements takes a quarter "
                            "(default 5)")
    bench.add_argument("--only", choices=("video", "synth", "gpu"), help="measure only this part (gpu: the GPU "
                       "tier's 1280x720 IOBinding frame path, on the CPU provider where there is no GPU)")
    bench.add_argument("--control", action="store_true",
                       help="measure OSC control instead (with --only: as well): messages/s and send-to-tree "
                            "latency over loopback for --seconds (default 60), then fuzzed datagrams")
    bench.add_argument("--fuzz-packets", type=int, default=1_000_000, metavar="N",
                       help="fuzzed datagrams sent with --control (default %(default)s)")
    bench.add_argument("--flicker", nargs="*", metavar="MODEL.json",
                       help="measure flicker instead (with --only: as well): warp error on a moving clip for every "
                            "style of these style models (default: the show's), teacher, tier and stabilized")
    bench.add_argument("--audio", action="store_true",
                       help="measure the show's sound instead: late cycles (ours vs jack_simple_client), starved "
                            "blocks, xruns, lead, render p99, OSC/MIDI note -> onset, quiet and under an OSC storm, "
                            "on a JACK server of its own; --seconds per phase (default 60)")
    bench.add_argument("--hog", action="store_true", help="with --audio: also with a busy neighbour (a CPU hog "
                                                          "per core), alone and with the storm")
    bench.add_argument("--lead", type=_lead, metavar="MS|auto",
                       help="with --audio: play with this [audio] lead (default: the show's own)")
    bench.add_argument("--inputs", action="store_true",
                       help="with --audio: play the show twice, without and with the analysis of its inputs (JACK's "
                            "input heard, and recorded by the synth for timbre transfer; the camera watched with "
                            "faces and the person mask), and compare frame rate and late cycles")
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    bench.set_defaults(func=_bench)
    soak = sub.add_parser("soak", help="play the show for a long time while injecting faults (source lost, audio "
                                       "server killed, bad reloads, OSC fuzz, model swaps); measure memory, threads, "
                                       "files, latency and drops, and judge them against the goals for one hour")
    soak.add_argument("show", nargs="?", default=str(DEFAULT_SHOW), help="show file (default: %(default)s)")
    soak.add_argument("--minutes", type=float, default=60.0, help="how long (default %(default)g)")
    soak.add_argument("--seconds", type=float, help=argparse.SUPPRESS)  # short runs for the tests
    soak.add_argument("--source", help="a video file, or 'builtin' (FFmpeg's test pattern; the default), relayed "
                                       "through a FIFO the soak can take away; a camera or URL plays as it is, "
                                       "without the source fault")
    soak.add_argument("--swap-model", metavar="MODEL.json", help="the model fault's other [video] model (default: "
                                                                 "styles-procedural, or styles-cpu)")
    soak.add_argument("--faults", default="source,audio,reload,osc,model", metavar="KINDS",
                      help="the fault kinds to inject, comma-separated (default: all, %(default)s)")
    soak.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    soak.add_argument("--strict", action="store_true", help="exit 1 if a goal fails")
    soak.set_defaults(func=_soak)
    styles = sub.add_parser("styles", help="the show's own styles: add pictures as a style, list, remove")
    actions = styles.add_subparsers(dest="action", required=True)
    for action, about in (("add", "predict a style from one or more pictures (averaged) into the show's bank"),
                          ("list", "the model's styles and the show's, with their pictures"),
                          ("remove", "take a style out of the show's bank")):
        one = actions.add_parser(action, help=about)
        if action != "list":
            one.add_argument("name", help="style name, e.g. monet (what /video/style_a takes)")
        if action == "add":
            one.add_argument("pictures", nargs="+", metavar="PICTURE", help="JPEG, PNG, ... files")
        one.add_argument("--show", default=str(DEFAULT_SHOW), help="show file (default: %(default)s)")
    styles.set_defaults(func=_styles)

    models = sub.add_parser("models", help="list, verify and import models (live models --help)", add_help=False)
    models.add_argument("rest", nargs=argparse.REMAINDER)
    models.set_defaults(func=_models)

    train = sub.add_parser("train", help="train a model: style, synth or latent (on data we make), music "
                                         "(on music21's corpus) (live train KIND --help)")
    train.add_argument("kind", choices=("style", "synth", "latent", "music"))
    train.add_argument("rest", nargs=argparse.REMAINDER)
    train.set_defaults(func=_train)
    return top


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["models"]:  # its own parser, options and --help included
        argv = ["models", "--", *argv[1:]]
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except LiveError as err:
        print(f"live: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        return 0
    except Exception as err:  # the last line of defence: one line, not a traceback on the projector
        if os.environ.get("LIVE_DEBUG"):
            traceback.print_exc()
        print(f"live: unexpected error: {type(err).__name__}: {err} (set LIVE_DEBUG=1 for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
