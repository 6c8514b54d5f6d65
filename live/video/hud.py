"""The heads-up display: a few lines of show health drawn over the window's picture (never the recording or the
outputs other apps read), shown while /live/hud is on or `h` is pressed in the window.

What a performer glances at: frame rate and latency, the cue and tempo, and whether controllers are being heard
or refused (OSC packets rejected, MIDI ports missing, a show file that failed to reload).
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
SCALE, LINE = 0.45, 18  # text size and line pitch at 480 lines; scaled with the frame height


def draw(image: np.ndarray, lines: list[str]) -> np.ndarray:
    """A copy of `image` with `lines` on a dark band at the top left."""
    out = image.copy()
    k = image.shape[0] / 480
    scale, pitch = SCALE * k, int(LINE * k)
    width = max((cv2.getTextSize(line, FONT, scale, 1)[0][0] for line in lines), default=0)
    band = out[:pitch * len(lines) + pitch // 2, :width + pitch]
    band[:] = band // 3  # darken, so the text reads on any picture
    for i, line in enumerate(lines):
        cv2.putText(out, line, (pitch // 2, pitch * (i + 1)), FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def lines(name: str, values: Mapping, latency_ms: float, dropped: int, parts: list[str], reload_error: str) -> list[str]:
    """The HUD's lines: what a performer needs to know at a glance, each part's status, problems last."""
    attract = "" if "/live/attract" not in values else "  attract " + ("active" if values["/live/attract"] else "idle")
    out = [f"{name}  latency {latency_ms:.0f} ms  dropped {dropped}",
           f"{values.get('/tempo/bpm', 0):.1f} bpm  cue {values.get('/scene/cue', '-')}"
           + ("  BLACKOUT" if values.get("/live/blackout") else "") + ("  REST" if values.get("/live/rest") else "")
           + attract]
    out += parts
    measured = [(a, v) for a, v in values.items() if a.startswith("/in/") and "/band/" not in a and "/grid/" not in a]
    for kind in ("audio", "video"):  # the measured inputs, a line each: what the show hears and sees
        shown = [f"{a.rsplit('/', 1)[1]} {v:.2f}" for a, v in measured if a.startswith(f"/in/{kind}/")]
        if shown:
            out.append(f"{kind} in: " + "  ".join(shown))
    if reload_error:
        out.append(f"show file NOT reloaded: {reload_error[:60]}")
    return out
