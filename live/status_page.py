"""The show's status page and /metrics, served over HTTP by aiohttp on its own thread and event loop.

`/` is one self-contained HTML page (inline script, nothing fetched from elsewhere): a live thumbnail of the output,
health (fps, latency, drops, each part's status, uptime, restarts), the recent problems the show said, and the
parameter tree as controls. A control writes through the tree like OSC does (read-only parameters are refused, and
OSC feedback clients hear the change). `/metrics` is the Prometheus text format (live/health.py). The frame path only
hands over a reference to its newest frame: the thumbnail is scaled and encoded here, when asked, a few times a
second at most.

Off the loopback address every request must carry the show's `[status] token`.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import cv2
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field

from live.errors import LiveError
from live.health import Metrics
from live.parts import BasePart

if TYPE_CHECKING:
    from live.player import Player

THUMBNAIL_WIDTH = 320
THUMBNAIL_S = 0.25  # a thumbnail is encoded at most this often; requests in between get the last one
START_S = 5.0  # the server's thread must be listening within this
CLOSE_S = 2.0


class StatusSection(BaseModel):
    """`[status]`: the status page and /metrics."""

    model_config = ConfigDict(extra="forbid")
    port: int = Field(8088, ge=0, le=65535, description="HTTP port of the status page and /metrics; 0 = off")
    bind: str = Field("127.0.0.1", description="address to listen on; anything but loopback needs a token")
    token: str = Field("", description="required with every request (?token= or Authorization: Bearer) when set")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class StatusPage(BasePart):
    """The HTTP server of one show; a part (live/parts.py). The player attaches itself before the parts open."""

    def __init__(self, section: StatusSection, say=print) -> None:
        if not _loopback(section.bind) and not section.token:
            raise LiveError(f"[status] bind = '{section.bind}' opens the status page (and its controls) to the "
                            "network without a password",
                            "set [status] token = \"a long random string\" (sent as ?token= or Authorization: "
                            "Bearer), or bind = \"127.0.0.1\"")
        self.section, self.say = section, say
        self.metrics: Metrics | None = None
        self.player: Player | None = None
        self.requests = self.refused = 0
        self.url = ""
        self._thumbnail: tuple[object, float, bytes] | None = None  # (frame, when encoded, JPEG)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def attach(self, player: Player) -> None:
        self.player = player
        self.metrics = Metrics(player, lambda: self.refused)

    # --- lifecycle ---------------------------------------------------------------------------------------

    def open(self) -> str:
        """Listen on [status] bind:port; a port already taken is said and the show plays on without the page
        (it is for watching the show, not for playing it)."""
        host, port = self.section.bind, self.section.port
        sock = None
        try:
            info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
            sock = socket.socket(info[0], socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restarted show gets its port back at once
            sock.bind(info[4])
            sock.listen(64)
        except OSError as err:
            if sock is not None:
                sock.close()
            self.say(f"Status: cannot listen on {host}:{port} ({err.strerror or err}); the show plays without its "
                     "status page (fix: another [status] port, or port = 0 for none)")
            return ""
        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(sock, started), name="status", daemon=True)
        self._thread.start()
        if not started.wait(START_S) or not self.url:
            self.say(f"Status: the page did not start on {host}:{port}; the show plays without it")
            return ""
        shown = socket.gethostname() if host in ("0.0.0.0", "::") else f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{sock.getsockname()[1]}/"
        return f"Status: {self.url}" + (" (token required)" if self.section.token else "")

    def _serve(self, sock: socket.socket, started: threading.Event) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False, shutdown_timeout=0.5)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.SockSite(runner, sock).start())
            self.url = "starting"
            started.set()
            loop.run_forever()
        except Exception as err:  # the page is for watching the show: its failure is said, never the show's end
            self.say(f"Status: the page stopped ({type(err).__name__}: {err}); the show plays on without it")
        finally:
            started.set()
            loop.run_until_complete(runner.cleanup())
            loop.close()
            sock.close()  # the server closes its own copy of the listening socket, not this one

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(CLOSE_S)
        self._thread = None

    def stats(self) -> dict[str, Any]:
        return {"url": self.url, "requests": self.requests, "refused": self.refused}

    def status(self) -> str:
        if not self.url:
            return ""
        return f"status page {self.url}" + (f", {self.refused} refused" if self.refused else "")

    # --- HTTP --------------------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._page)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        app.router.add_get("/thumbnail.jpg", self._thumbnail_jpeg)
        app.router.add_get("/params", self._params)
        app.router.add_post("/params", self._set_param)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler) -> web.StreamResponse:
        """With a token, every request carries it (?token= or Authorization: Bearer); a missing or wrong one is 401,
        counted, compared in constant time. Without one (loopback only), a request must name the loopback address
        as its host, so a page elsewhere cannot reach the controls by DNS rebinding."""
        token = self.section.token
        if not token and not _loopback(request.url.host or ""):  # a web page's name rebound to this machine
            self.refused += 1
            return web.Response(status=403, text="403: without a [status] token the page answers only to "
                                "http://127.0.0.1 or http://localhost\n")
        if token:
            given = request.query.get("token", "")
            bearer = request.headers.get("Authorization", "")
            if not given and bearer.startswith("Bearer "):
                given = bearer.removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), token.encode()):
                self.refused += 1
                return web.Response(status=401, text="401: this show's status page needs its [status] token "
                                    "(?token=... or Authorization: Bearer ...)\n",
                                    headers={"WWW-Authenticate": 'Bearer realm="live"'})
        self.requests += 1
        return await handler(request)

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def _metrics(self, request: web.Request) -> web.Response:
        body = self.metrics.exposition() if self.metrics else b""
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health(self, request: web.Request) -> web.Response:
        if self.metrics is None:
            return web.json_response({})
        health = self.metrics.snapshot()
        health["status_refused"] = self.refused
        return web.json_response(health)

    def thumbnail(self) -> bytes | None:
        """The newest output frame, ~320 px wide, as JPEG: encoded again only when a newer frame went out and the
        last encoding is THUMBNAIL_S old; None before the first frame."""
        frame = self.player.newest if self.player else None
        if frame is None:
            return None
        now = time.monotonic()
        last = self._thumbnail
        if last and (last[0] is frame or now - last[1] < THUMBNAIL_S):
            return last[2]
        image = frame.image
        height, width = image.shape[:2]
        size = (THUMBNAIL_WIDTH, max(1, round(height * THUMBNAIL_WIDTH / width)))
        ok, jpeg = cv2.imencode(".jpg", cv2.resize(image, size, interpolation=cv2.INTER_AREA),
                                [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            return last[2] if last else None
        self._thumbnail = (frame, now, jpeg.tobytes())
        return self._thumbnail[2]

    async def _thumbnail_jpeg(self, request: web.Request) -> web.Response:
        jpeg = self.thumbnail()
        if jpeg is None:
            return web.Response(status=503, text="no frame yet\n", headers={"Retry-After": "1"})
        return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def _params(self, request: web.Request) -> web.Response:
        tree = self.player.graph.tree
        snapshot = tree.snapshot
        items = [p.describe() | {"value": snapshot[p.address]} for p in sorted(tree.params.values(),
                                                                               key=lambda p: p.address)]
        return web.json_response(items)

    async def _set_param(self, request: web.Request) -> web.Response:
        """{"address": ..., "value": ...}: written to the tree as OSC writes it; JSON only (a page elsewhere
        cannot send it without the browser asking first, which this server never allows)."""
        if request.content_type != "application/json":
            return web.json_response({"error": "send JSON: {\"address\": ..., \"value\": ...}"}, status=415)
        try:
            body = await request.json()
            address, value = body["address"], body["value"]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "send JSON: {\"address\": ..., \"value\": ...}"}, status=400)
        try:
            value = self.player.graph.tree.set(str(address), value, f"status:{request.remote}")
        except KeyError:
            return web.json_response({"error": f"unknown address {address} (see `live params`)"}, status=404)
        except ValueError as err:
            return web.json_response({"error": str(err)}, status=400)
        return web.json_response({"address": address, "value": value})


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>live: status</title><link rel="icon" href="data:,">
<style>
body { font: 14px system-ui, sans-serif; margin: 0; background: #111; color: #ddd; }
header { padding: 8px 12px; background: #222; display: flex; gap: 16px; align-items: baseline; }
h1 { font-size: 16px; margin: 0; } h2 { font-size: 14px; margin: 12px 0 4px; color: #aaa; }
main { display: grid; grid-template-columns: 340px 1fr; gap: 12px; padding: 12px; }
#thumb { width: 320px; background: #000; display: block; }
table { border-collapse: collapse; } td { padding: 1px 8px 1px 0; vertical-align: top; }
.problem { color: #f96; font-family: monospace; font-size: 12px; white-space: pre-wrap; }
.down { color: #f66; } .param { display: grid; grid-template-columns: 220px 200px 90px; gap: 6px; align-items: center; }
.param code { overflow: hidden; text-overflow: ellipsis; } .err { color: #f66; }
</style></head><body>
<header><h1 id="show">live</h1><span id="summary"></span><span id="error" class="err"></span></header>
<main><section>
<img id="thumb" alt="the output">
<h2>Health</h2><table id="health"></table>
<h2>Parts</h2><table id="parts"></table>
<h2>Recent problems</h2><div id="problems"></div>
</section><section><h2>Parameters</h2><div id="params"></div></section></main>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token") || "";
const headers = token ? {"Authorization": "Bearer " + token} : {};
const q = (path) => path + (token ? (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : "");
const $ = (id) => document.getElementById(id);
const controls = {};

function row(table, cells, cls) {
  const tr = table.insertRow();
  if (cls) tr.className = cls;
  for (const text of cells) tr.insertCell().textContent = text;
}

async function health() {
  const r = await fetch("/health", {headers});
  if (!r.ok) { $("error").textContent = "status " + r.status; return; }
  const h = await r.json();
  $("show").textContent = h.show;
  $("summary").textContent = h.fps.toFixed(1) + " fps, latency p50 " + (h.latency_p50_s * 1000).toFixed(1) + " ms";
  const t = $("health"); t.textContent = "";
  row(t, ["fps", h.fps.toFixed(1)]);
  const ms = (s) => (s * 1000).toFixed(1);
  row(t, ["latency p50 / p95", ms(h.latency_p50_s) + " / " + ms(h.latency_p95_s) + " ms"]);
  row(t, ["frames", h.frames]); row(t, ["dropped", h.dropped]); row(t, ["camera frames skipped", h.skipped]);
  row(t, ["uptime", Math.round(h.uptime_s) + " s"]); row(t, ["restarts", h.restarts]);
  row(t, ["audio underruns", h.audio_underruns]);
  row(t, ["OSC ok / error", h.osc_ok + " / " + h.osc_error]);
  row(t, ["reloads applied / refused", h.reloads.applied + " / " + h.reloads.refused]);
  if (h.reload_error) row(t, ["reload", h.reload_error], "down");
  const p = $("parts"); p.textContent = "";
  for (const [name, part] of Object.entries(h.parts)) row(p, [name, part.status], part.up ? "" : "down");
  const box = $("problems"); box.textContent = h.recent_problems.length ? "" : "none";
  for (const item of h.recent_problems.slice().reverse()) {
    const div = document.createElement("div"); div.className = "problem";
    div.textContent = new Date(item.at * 1000).toLocaleTimeString() + "  " + item.line;
    box.appendChild(div);
  }
}

async function send(address, value) {
  const r = await fetch(q("/params"), {method: "POST", headers: {...headers, "Content-Type": "application/json"},
                                       body: JSON.stringify({address, value})});
  const answer = await r.json();
  $("error").textContent = r.ok ? "" : answer.error;
  if (r.ok) show(address, answer.value);
}

function show(address, value) {
  const c = controls[address];
  if (!c || document.activeElement === c.input && c.dragging) return;
  if (c.input.type === "checkbox") c.input.checked = !!value; else c.input.value = value;
  c.label.textContent = typeof value === "number" ? +value.toFixed(3) : value;
}

function build(params) {
  const box = $("params"); box.textContent = "";
  for (const p of params) {
    const div = document.createElement("div"); div.className = "param";
    const name = document.createElement("code"); name.textContent = p.address; name.title = p.doc;
    let input;
    if (p.type === "enum") {
      input = document.createElement("select");
      for (const c of p.choices) {
        const o = document.createElement("option"); o.value = o.textContent = c; input.appendChild(o);
      }
      input.addEventListener("change", () => send(p.address, input.value));
    } else if (p.type === "bool") {
      input = document.createElement("input"); input.type = "checkbox";
      input.addEventListener("change", () => send(p.address, input.checked));
    } else {
      input = document.createElement("input"); input.type = "range"; input.min = p.min; input.max = p.max;
      input.step = p.type === "int" ? 1 : (p.max - p.min) / 1000 || 0.001;
      input.addEventListener("input", () => send(p.address, Number(input.value)));
      input.addEventListener("pointerdown", () => controls[p.address].dragging = true);
      input.addEventListener("pointerup", () => controls[p.address].dragging = false);
    }
    input.dataset.address = p.address;
    input.disabled = !!p.readonly;
    const label = document.createElement("span");
    controls[p.address] = {input, label, dragging: false};
    div.append(name, input, label); box.appendChild(div);
    show(p.address, p.value);
  }
}

async function params(first) {
  const r = await fetch("/params", {headers});
  if (!r.ok) return;
  const items = await r.json();
  if (first || items.length !== Object.keys(controls).length) build(items);
  else for (const p of items) show(p.address, p.value);
}

async function thumbnail() {
  try {
    const r = await fetch("/thumbnail.jpg", {headers, cache: "no-store"});
    if (r.ok) {
      const img = $("thumb"), old = img.src, url = URL.createObjectURL(await r.blob());
      img.onload = () => { if (old) URL.revokeObjectURL(old); };
      img.src = url;
    }
  } catch (e) {}
  setTimeout(thumbnail, 300);
}

params(true); health(); thumbnail();
setInterval(health, 1000); setInterval(() => params(false), 1000);
</script></body></html>
"""
