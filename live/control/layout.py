"""A tablet layout for Open Stage Control (1.x session format), generated from a show, so the layout and the show
never disagree: one widget per parameter the show maps to its MIDI controller (faders for numbers, menus for
enums, toggles for switches), plus the cue and system buttons. Widgets send to the parameter's own OSC address;
`live layout SHOW` writes it (show_configs/vj-open-stage-control.json is `live layout show_configs/vj.toml`).
"""

from __future__ import annotations

from typing import Any

from live.params import Param
from live.show import Show

WIDTH, HEIGHT, GAP = 90, 300, 10  # pixels, per fader column
BUTTONS = (("/scene/back", "◀ back"), ("/scene/go", "go ▶"), ("/tempo/tap", "tap"), ("/live/panic", "panic"))


def _widget(param: Param, left: int, top: int) -> dict[str, Any]:
    common = {"id": param.address.strip("/").replace("/", "_"), "label": param.address.rsplit("/", 1)[-1],
              "address": param.address, "left": left, "top": top}
    if param.type == "enum":
        return {**common, "type": "dropdown", "width": WIDTH, "height": 40,
                "values": {choice: choice for choice in param.choices}, "value": param.default}
    if param.type == "bool":
        return {**common, "type": "toggle", "width": WIDTH, "height": 60, "on": 1, "off": 0}
    return {**common, "type": "fader", "width": WIDTH, "height": HEIGHT, "horizontal": False,
            "range": {"min": param.min, "max": param.max}, "value": param.default,
            "steps": int(param.max - param.min) + 1 if param.type == "int" else None}


def open_stage_control(show: Show) -> dict[str, Any]:
    """The session document: the show's MIDI-mapped parameters left to right, system buttons underneath."""
    from live.graph import build  # the graph imports the control surface, which this module is part of

    tree = build(show, window=False, say=lambda _: None).tree
    mapped = list(dict.fromkeys(m.param for m in show.midi.map if m.param in tree.params))
    numbers = [tree.params[a] for a in mapped if tree.params[a].type in ("float", "int")]
    others = [tree.params[a] for a in mapped if tree.params[a].type not in ("float", "int")]
    widgets = [_widget(p, GAP + i * (WIDTH + GAP), GAP) for i, p in enumerate(numbers)]
    row = HEIGHT + 2 * GAP
    widgets += [_widget(p, GAP + i * (WIDTH + GAP), row) for i, p in enumerate(others)]
    row += 70
    for i, (address, label) in enumerate(b for b in BUTTONS if b[0] in tree.events):
        widgets.append({"type": "button", "id": address.strip("/").replace("/", "_"), "label": label,
                        "address": address, "mode": "tap", "on": 1, "off": None,
                        "left": GAP + i * (WIDTH + GAP), "top": row, "width": WIDTH, "height": 60})
    return {"createdWith": "Open Stage Control", "version": "1.26.0", "type": "session",
            "content": {"type": "root", "id": "root", "label": f"live: {show.name}", "widgets": widgets,
                        "tabs": []}}
