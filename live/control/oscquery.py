"""OSCQuery: the parameter tree as JSON over HTTP, value streams over a websocket, advertised by zeroconf.

Tools like TouchOSC, VDMX, Chataigne or ossia score discover a running show (`_oscjson._tcp`), read every address
with its type, range, unit and current value, and then subscribe to values instead of polling them
(https://github.com/Vidvox/OSCQueryProposal). Everything served is generated from the `ParamTree`, so it can
never drift from what OSC really accepts.

One daemon thread runs one asyncio loop with the `websockets` server: plain GETs are answered in
`process_request`, upgrades on the same port become value streams (the spec puts both on one port), and the
zeroconf responder shares the loop. Streams are pulled, not pushed: a poller compares `tree.version` at most
`POLL_HZ` times a second and leaves each client a dict of {address: latest value}, so a burst of writes costs a
handful of messages and nothing can queue up behind a slow client.

Any web page the performer opens can reach a localhost port, so nothing is trusted for being local. Every request,
HTTP or websocket handshake, must name this server in its Host header (a page on an attacker's domain that
rebinds its DNS to 127.0.0.1 still sends its own domain as Host) and must carry no Origin, or one the show lists
in `[oscquery] allow_origins` (browsers always send Origin on websockets and cross-origin fetches; native clients
like Chataigne, Open Stage Control's server or curl send none). CORS answers echo an allowed origin, never `*`.
Binary OSC over the websocket sets parameters only if the show says `ws_writes = true`: controllers write over
OSC (the UDP port HOST_INFO names), and streaming values out needs no write access.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from live.control.osc import check_complete
from live.errors import LiveError
from live.params import Event, Param, ParamTree, Value

#: How often the poller looks for changed values: a fader moved continuously reaches a client at this rate.
POLL_HZ = 60.0
#: Websocket clients served at once; more are closed with 1013 (try again later).
MAX_CLIENTS = 32
#: Largest websocket message accepted from a client (an OSC packet never needs more).
MAX_MESSAGE = 65536
#: Seconds open() and close() wait for the server thread before giving up.
START_TIMEOUT = 10.0

OSCJSON_SERVICE = "_oscjson._tcp.local."
OSC_SERVICE = "_osc._udp.local."

#: Every attribute the spec names; querying one this tree does not use for a node answers 204, any other 400.
ATTRIBUTES = ("FULL_PATH", "CONTENTS", "DESCRIPTION", "TYPE", "VALUE", "RANGE", "ACCESS", "UNIT", "CLIPMODE",
              "TAGS", "EXTENDED_TYPE", "CRITICAL", "OVERLOADS", "HTML")
EXTENSIONS = {
    "ACCESS": True, "VALUE": True, "RANGE": True, "DESCRIPTION": True, "TYPE": True, "UNIT": True,
    "CLIPMODE": True, "TAGS": False, "EXTENDED_TYPE": False, "CRITICAL": False, "OVERLOADS": False,
    "HTML": False, "LISTEN": True, "PATH_CHANGED": True, "PATH_RENAMED": False, "PATH_ADDED": True,
    "PATH_REMOVED": True,
}
_TAGS = {"float": "f", "int": "i", "enum": "s"}
_WILDCARD_HOSTS = ("", "0.0.0.0", "::")
#: Names that reach a loopback bind from this machine; no other machine (and no DNS answer) can make them mean it.
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
#: Least seconds between re-reading this machine's addresses when a wildcard bind meets an unknown IP as Host.
_ADDRESS_REFRESH = 1.0
_DEFAULT_PORTS = {"http": 80, "https": 443}  # left out of an Origin, as browsers do
_UNSET = object()


def normalize_origin(entry: str) -> str:
    """`entry` as browsers serialize an Origin (scheme://host[:port], lowercase, default port left out), so a
    listed origin matches the header whatever its case; ValueError saying how to write it otherwise."""
    text = entry.strip()
    if text == "*":
        raise ValueError("allow_origins entry '*' would let every web page steer the show: list each page's "
                         "origin instead, e.g. http://127.0.0.1:8080")
    if text.lower() == "null":
        raise ValueError("allow_origins entry 'null' is what every file:// page and sandboxed frame sends: serve "
                         "the page over http and list that origin instead")
    url = urlsplit(text)
    try:
        port = url.port
    except ValueError:
        port = -1
    if (not url.scheme or not url.hostname or port == -1 or "*" in text or url.path or url.query or url.fragment
            or url.username is not None):
        raise ValueError(f"allow_origins entry '{entry}' is not an origin: write scheme://host[:port] with no path, "
                         f"e.g. http://127.0.0.1:8080")
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    shown = "" if port is None or port == _DEFAULT_PORTS.get(url.scheme) else f":{port}"
    return f"{url.scheme}://{host}{shown}"


def _canonical_host(host: str) -> str:
    """A host name or IP as compared against Host headers: lowercase, no brackets or trailing dot, IPs in their
    one canonical spelling (::1, not 0:0:0:0:0:0:0:1)."""
    host = host.strip("[]").rstrip(".").lower()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class OscQuerySection(BaseModel):
    """`[oscquery]` in a show file."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9001  # 0 = any free port
    name: str = "live"
    zeroconf: bool = True
    allow_origins: list[str] = Field(
        default_factory=list, description="web page origins (scheme://host[:port]) allowed to query and stream; "
                                          "native clients send no Origin and are always allowed")
    ws_writes: bool = Field(False, description="apply OSC messages sent over the websocket (any allowed client, "
                                               "web pages included, can then steer the show)")

    @field_validator("allow_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        return [normalize_origin(entry) for entry in value]


# --- the namespace, generated from the tree -------------------------------------------------------------------


def _type_tag(param: Param, value: Value) -> str:
    if param.type == "bool":
        return "T" if value else "F"
    return _TAGS[param.type]


def _param_node(param: Param, value: Value) -> dict[str, Any]:
    # Booleans: OSC has no boolean argument, only the T/F tags that carry the value themselves. The spec's JSON
    # table maps both to a JSON boolean; we declare "T" (as VRChat and ossia do) and send T or F per value.
    node: dict[str, Any] = {
        "FULL_PATH": param.address,
        "TYPE": "T" if param.type == "bool" else _TAGS[param.type],
        "VALUE": [value],
        "ACCESS": 1 if param.readonly else 3,  # a measured value can be read and streamed, not written
        "DESCRIPTION": param.doc,
    }
    if param.type == "enum":
        node["RANGE"] = [{"VALS": list(param.choices)}]
    elif param.type == "bool":
        node["RANGE"] = [{"VALS": [False, True]}]
    else:
        cast = int if param.type == "int" else float
        node["RANGE"] = [{"MIN": cast(param.min), "MAX": cast(param.max)}]
        # CLIPMODE is a hint: "both" when out-of-range numbers are clipped; wrap/fold/reject accept or refuse
        # them by rules the spec cannot express, so they say "none".
        node["CLIPMODE"] = ["both" if param.clip == "clip" else "none"]
    if param.unit:
        node["UNIT"] = [param.unit]
    return node


def _event_node(event: Event) -> dict[str, Any]:
    return {
        "FULL_PATH": event.address,
        "TYPE": "".join("i" if kind == "int" else "f" for _, kind, _, _ in event.args),
        "ACCESS": 2,  # write-only: an event has no value to read
        "RANGE": [{"MIN": int(lo) if kind == "int" else float(lo), "MAX": int(hi) if kind == "int" else float(hi)}
                  for _, kind, lo, hi in event.args],
        "CLIPMODE": ["both"] * len(event.args),
        "DESCRIPTION": event.doc,
    }


def build_namespace(tree: ParamTree, values: Mapping[str, Value], name: str) -> dict[str, Any]:
    """The whole address space as one OSCQuery JSON node, containers made from the address segments."""
    root: dict[str, Any] = {"FULL_PATH": "/", "CONTENTS": {}, "DESCRIPTION": f"{name}: every parameter and event"}
    leaves: list[tuple[str, dict[str, Any]]] = [(a, _param_node(p, values[a])) for a, p in tree.params.items()]
    leaves += [(a, _event_node(e)) for a, e in tree.events.items()]
    for address, leaf in sorted(leaves, key=lambda item: item[0]):
        node = root
        parts = address.strip("/").split("/")
        for depth, part in enumerate(parts[:-1]):
            contents = node.setdefault("CONTENTS", {})
            if part not in contents:
                path = "/" + "/".join(parts[:depth + 1])
                contents[part] = {"FULL_PATH": path, "CONTENTS": {}, "DESCRIPTION": f"{path} controls"}
            node = contents[part]
        contents = node.setdefault("CONTENTS", {})
        if parts[-1] in contents:  # an address that is also a container: one node with both
            leaf["CONTENTS"] = contents[parts[-1]].get("CONTENTS", {})
        contents[parts[-1]] = leaf
    return root


def find_node(namespace: dict[str, Any], path: str) -> dict[str, Any] | None:
    node = namespace
    for part in (p for p in path.split("/") if p):
        node = node.get("CONTENTS", {}).get(part)
        if node is None:
            return None
    return node


def encode_value(param: Param, value: Value) -> bytes:
    """One OSC message carrying a parameter's value, typed as TYPE declares."""
    builder = OscMessageBuilder(param.address)
    tag = _type_tag(param, value)
    builder.add_arg(bool(value) if tag in "TF" else value, tag)
    return builder.build().dgram


# --- the server -----------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Client:
    ws: ServerConnection
    source: str
    listening: set[str] = field(default_factory=set)
    known: dict[str, Value] = field(default_factory=dict)  # the value this client last saw per address
    pending: dict[str, Value] = field(default_factory=dict)  # to send; at most one entry per address
    paths: dict[str, str] = field(default_factory=dict)  # PATH_ADDED/REMOVED/CHANGED to send, latest per address
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class OscQueryServer:
    """Serves `tree` over OSCQuery on host:port; `osc_port` is where OSC itself is received (for HOST_INFO).
    `allow_origins` and `ws_writes` are the show's [oscquery] keys, closed unless given: no browser page is answered and
    nothing written over the websocket is applied (see the module docstring for why)."""

    def __init__(self, tree: ParamTree, osc_port: int, host: str = "127.0.0.1", port: int = 9001,
                 name: str = "live", zeroconf: bool = True, *, osc_host: str = "",
                 allow_origins: Iterable[str] = (), ws_writes: bool = False, max_clients: int = MAX_CLIENTS) -> None:
        self.tree, self.osc_port, self.host, self.port = tree, osc_port, host, port
        self.name, self.zeroconf, self.osc_host, self.max_clients = name, zeroconf, osc_host, max_clients
        try:
            self.allow_origins = frozenset(normalize_origin(origin) for origin in allow_origins)
        except ValueError as err:
            raise LiveError(f"[oscquery] allow_origins: {err}",
                            "list origins as scheme://host[:port], or leave allow_origins empty") from None
        self.ws_writes = ws_writes
        # refused_*: requests and handshakes turned away for their Host or Origin, websocket writes while
        # ws_writes is off. A refused request also counts in http_errors, a refused handshake in ws_rejected.
        self.counts = {
            "http_requests": 0, "http_errors": 0, "ws_accepted": 0, "ws_rejected": 0, "sent": 0, "dropped": 0,
            "received": 0, "applied": 0, "malformed": 0, "unknown": 0, "bad_value": 0, "bad_command": 0,
            "refused_host": 0, "refused_origin": 0, "refused_writes": 0,
        }
        self._hosts: frozenset[str] = frozenset()  # what a Host header may name, filled in once bound
        self._hosts_read = 0.0
        self.last_problem = ""
        self.zeroconf_state = "off" if not zeroconf else "not started"
        self._clients: set[_Client] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Server | None = None
        self._tasks: list[asyncio.Task] = []
        self._aiozc: Any = None

    @classmethod
    def from_section(cls, tree: ParamTree, section: OscQuerySection, osc_port: int, osc_host: str = "",
                     **limits: Any) -> OscQueryServer:
        """A server configured by the show's [oscquery] table; `limits` passes the other keyword arguments on."""
        return cls(tree, osc_port, section.host, section.port, section.name, section.zeroconf, osc_host=osc_host,
                   allow_origins=section.allow_origins, ws_writes=section.ws_writes, **limits)

    # -- lifecycle (caller's thread) --

    def open(self) -> str:
        """Bind and start serving; LiveError naming the port if it is taken. Returns a one-line status."""
        if self._thread is not None:
            raise RuntimeError("OscQueryServer.open() called twice")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="oscquery", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            asyncio.run_coroutine_threadsafe(self._start(), loop).result(START_TIMEOUT)
        except OSError as err:
            self._stop_thread()
            if err.errno == errno.EADDRINUSE:
                raise LiveError(f"OSCQuery port {self.port} on {self.host} is already in use (another show?)",
                                "stop the other program, or set [oscquery] port in the show to a free port "
                                "(0 picks one)") from None
            raise LiveError(f"cannot serve OSCQuery on {self.host}:{self.port}: {err.strerror or err}",
                            "set [oscquery] host to 127.0.0.1 or an address of this machine") from None
        except BaseException:
            self._stop_thread()
            raise
        advert = f"; announcing '{self.name}' via zeroconf" if self.zeroconf else ""
        if self.host in _WILDCARD_HOSTS:
            return f"OSCQuery: http://127.0.0.1:{self.port} on all interfaces (ws on the same port{advert})"
        return f"OSCQuery: http://{self.host}:{self.port} (ws on the same port{advert})"

    def close(self) -> None:
        """Stop serving, withdraw the zeroconf records and join the thread; safe to call twice."""
        loop = self._loop
        if loop is None or self._thread is None:
            return
        if loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(START_TIMEOUT)
            except Exception as err:  # a hung client or responder must not keep the show from ending
                self.last_problem = f"close: {err!r}"
        self._stop_thread()

    def _stop_thread(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=START_TIMEOUT)
        if not thread.is_alive():
            loop.close()
        self._loop = None

    def stats(self) -> dict[str, Any]:
        """Counters, clients connected, addresses listened to and the zeroconf state, for the show summary."""
        return {**self.counts, "ws_clients": len(self._clients),
                "listening": sum(len(c.listening) for c in list(self._clients)), "zeroconf": self.zeroconf_state}

    # -- inside the loop --

    async def _start(self) -> None:
        self._server = await serve(
            self._handle_ws, self.host, self.port, process_request=self._http, max_size=MAX_MESSAGE,
            max_queue=16, compression=None, close_timeout=1.0, server_header=f"live OSCQuery ({self.name})")
        self.port = self._server.sockets[0].getsockname()[1]
        self._hosts, self._hosts_read = self._own_hosts(), time.monotonic()
        self._tasks.append(asyncio.get_running_loop().create_task(self._poll()))
        if self.zeroconf:
            self._tasks.append(asyncio.get_running_loop().create_task(self._advertise()))

    async def _shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()  # closes websockets with 1001 (going away) and waits for their handlers
            await self._server.wait_closed()
        if self._aiozc is not None:
            try:
                await asyncio.wait_for(self._aiozc.async_close(), 3.0)  # sends the goodbye packets
                self.zeroconf_state = "closed"
            except Exception as err:
                self.zeroconf_state = f"close failed: {err!r}"
            self._aiozc = None

    # who may ask

    def _own_hosts(self) -> frozenset[str]:
        """Every name a Host header may give for this server: the addresses it is bound to and the name the show
        gave; for a loopback bind also `localhost`; the name zeroconf announces. A wildcard bind is reached on any
        address of this machine, so those all count, with its hostname (and `.local`, its mDNS name): none of them
        is a name an attacker's DNS controls, which is all that stops DNS rebinding."""
        assert self._server is not None
        hosts = {_canonical_host(self._mdns_server())} if self.zeroconf else set()
        if self.host in _WILDCARD_HOSTS:
            import ifaddr  # zeroconf's own dependency, and what it recommends for listing addresses

            hostname = socket.gethostname().lower()
            hosts |= {hostname, f"{hostname}.local", *_LOOPBACK_NAMES}
            hosts |= {_canonical_host(ip.ip if ip.is_IPv4 else ip.ip[0])
                      for adapter in ifaddr.get_adapters() for ip in adapter.ips}
            return frozenset(hosts)
        bound = {_canonical_host(sock.getsockname()[0]) for sock in self._server.sockets}
        hosts |= bound | {_canonical_host(self.host)}
        if any(ipaddress.ip_address(address).is_loopback for address in bound):
            hosts |= _LOOPBACK_NAMES
        return frozenset(hosts)

    def _host_allowed(self, value: str) -> bool:
        """Whether one Host header names this server, port included (none means 80, as for any http URL)."""
        url = urlsplit(f"//{value}")
        try:
            port = url.port or 80
        except ValueError:
            return False
        if not url.hostname or url.netloc != value or url.username is not None or port != self.port:
            return False
        host = _canonical_host(url.hostname)
        if host in self._hosts:
            return True
        # A wildcard bind may have gained an address since it opened (the laptop joined the venue's network).
        if self.host in _WILDCARD_HOSTS and _is_ip(host) and time.monotonic() - self._hosts_read >= _ADDRESS_REFRESH:
            self._hosts, self._hosts_read = self._own_hosts(), time.monotonic()
            return host in self._hosts
        return False

    def _refusal(self, request: Request) -> tuple[str, str] | None:
        """(counter, why) if this request or handshake must be refused for its Host or Origin, else None."""
        hosts, origins = request.headers.get_all("Host"), request.headers.get_all("Origin")
        if len(hosts) != 1 or not self._host_allowed(hosts[0]):
            return "refused_host", f"Host {hosts!r:.80} does not name this server (DNS rebinding?)"
        if origins and not self._allowed_origin(origins):
            return "refused_origin", f"Origin {origins!r:.80} is not in [oscquery] allow_origins"
        return None

    def _allowed_origin(self, origins: list[str]) -> str:
        """The Origin header as sent if it is one the show allows (what CORS must echo), else ""."""
        try:
            allowed = len(origins) == 1 and normalize_origin(origins[0]) in self.allow_origins
        except ValueError:
            return ""
        return origins[0] if allowed else ""

    # HTTP

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        refusal = self._refusal(request)
        if refusal is not None:
            kind, why = refusal
            self._problem(kind, f"refused {'websocket' if upgrade else 'HTTP request'}: {why}")
            if upgrade:
                self.counts["ws_rejected"] += 1
                return connection.respond(HTTPStatus.FORBIDDEN, f"{why}\n")
        elif upgrade:
            return None  # the websocket handshake goes on
        self.counts["http_requests"] += 1
        status, body = (HTTPStatus.FORBIDDEN, {"ERROR": refusal[1]}) if refusal else self.answer(request.path)
        if status != HTTPStatus.OK:
            self.counts["http_errors"] += 1
        response = connection.respond(status, "" if body is None else json.dumps(body))
        if body is not None:
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "application/json"
        # CORS for the origins the show allows, by name: a browser then lets that page alone read the answer.
        origin = "" if refusal else self._allowed_origin(request.headers.get_all("Origin"))
        if origin:
            response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"  # the answer depends on it: no cache may hand it to another page
        return response

    def answer(self, target: str) -> tuple[HTTPStatus, Any]:
        """Status and JSON body for one GET: a node, one of its attributes (`?VALUE`), or `?HOST_INFO`."""
        url = urlsplit(target)
        query = unquote(url.query).split("=", 1)[0].upper()
        if query == "HOST_INFO":
            return HTTPStatus.OK, self.host_info()
        namespace = build_namespace(self.tree, self.tree.snapshot, self.name)
        node = find_node(namespace, unquote(url.path))
        if node is None:
            return HTTPStatus.NOT_FOUND, {"ERROR": f"no OSC node at {unquote(url.path)}"}
        if not query:
            return HTTPStatus.OK, node
        if query not in ATTRIBUTES:
            return HTTPStatus.BAD_REQUEST, {"ERROR": f"unknown attribute {query}"}
        if query not in node:
            return HTTPStatus.NO_CONTENT, None
        return HTTPStatus.OK, {query: node[query]}

    def host_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"NAME": self.name, "EXTENSIONS": dict(EXTENSIONS), "OSC_PORT": self.osc_port,
                                "OSC_TRANSPORT": "UDP", "WS_PORT": self.port}
        # An IP left out means "the address you reached this HTTP server on", which is right for wildcards.
        if self.osc_host and self.osc_host not in _WILDCARD_HOSTS:
            info["OSC_IP"] = self.osc_host
        if self.host not in _WILDCARD_HOSTS:
            info["WS_IP"] = self.host
        return info

    # websocket

    async def _handle_ws(self, ws: ServerConnection) -> None:
        if len(self._clients) >= self.max_clients:
            self.counts["ws_rejected"] += 1
            await ws.close(1013, f"too many OSCQuery clients (at most {self.max_clients})")
            return
        peer = ws.remote_address
        client = _Client(ws, f"oscquery:{peer[0]}:{peer[1]}" if peer else "oscquery:?")
        self._clients.add(client)
        self.counts["ws_accepted"] += 1
        sender = asyncio.get_running_loop().create_task(self._send_loop(client))
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    self._receive_osc(message, client.source)
                else:
                    self._command(client, message)
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(client)
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    def _command(self, client: _Client, text: str) -> None:
        try:
            command = json.loads(text)
            verb, path = command["COMMAND"], command["DATA"]
            if verb not in ("LISTEN", "IGNORE") or not isinstance(path, str):
                raise ValueError(f"unsupported command {verb!r}")
        except (ValueError, KeyError, TypeError) as err:
            self._problem("bad_command", f"bad websocket command {text[:80]!r}: {err}")
            return
        if verb == "IGNORE":
            client.listening.discard(path)
            client.pending.pop(path, None)
        elif path in self.tree.params:
            client.known[path] = self.tree.snapshot[path]  # from now on, changes only
            client.listening.add(path)
        else:  # events are write-only; anything else does not exist
            self._problem("unknown", f"LISTEN to {path}: not a parameter (see `live params`)")

    async def _send_loop(self, client: _Client) -> None:
        while True:
            await client.wake.wait()
            client.wake.clear()
            while client.paths:  # namespace changes first: a client refetches before it hears new values
                address = next(iter(client.paths))
                await client.ws.send(json.dumps({"COMMAND": client.paths.pop(address), "DATA": address}))
            while client.pending:
                address = next(iter(client.pending))
                value = client.pending.pop(address)
                param = self.tree.params.get(address)
                if param is None:
                    continue  # removed by a reload since it was queued
                # send() waits while the connection's write buffer is full; meanwhile the poller keeps
                # overwriting `pending`, so a slow client gets fewer, newer values instead of a backlog.
                await client.ws.send(encode_value(param, value))
                self.counts["sent"] += 1

    async def _poll(self) -> None:
        seen, generation = -1, self.tree.generation
        params, events = self.tree.params, self.tree.events
        while True:
            await asyncio.sleep(1.0 / POLL_HZ)
            if self.tree.generation != generation:  # a reloaded show: tell clients which paths changed
                generation = self.tree.generation
                self._paths_changed({**params, **events}, {**self.tree.params, **self.tree.events})
                params, events = self.tree.params, self.tree.events
            version = self.tree.version
            if version == seen or not self._clients:
                seen = version
                continue
            seen = version
            values, writers = self.tree.snapshot, self.tree.written_by
            for client in list(self._clients):
                for address in client.listening:
                    value = values.get(address, _UNSET)
                    if value is _UNSET or client.known.get(address, _UNSET) == value:
                        continue
                    client.known[address] = value
                    if writers.get(address) == client.source:
                        continue  # its own move: never echoed (no feedback loops)
                    if address in client.pending:
                        self.counts["dropped"] += 1  # superseded before the client could take it
                    client.pending[address] = value
                if client.pending:
                    client.wake.set()

    def _paths_changed(self, old: Mapping[str, Param | Event], new: Mapping[str, Param | Event]) -> None:
        """Queue PATH_ADDED / PATH_REMOVED / PATH_CHANGED (type, range, unit...) for every client; a removed path
        is no longer listened to."""
        changes = {**{a: "PATH_REMOVED" for a in old.keys() - new.keys()},
                   **{a: "PATH_ADDED" for a in new.keys() - old.keys()},
                   **{a: "PATH_CHANGED" for a in old.keys() & new.keys() if old[a] != new[a]}}
        if not changes:
            return
        ordered = sorted(changes.items())
        for client in list(self._clients):
            for address, command in ordered:
                client.paths[address] = command
                if command == "PATH_REMOVED":
                    client.listening.discard(address)
                    client.known.pop(address, None)
                    client.pending.pop(address, None)
            client.wake.set()

    def _receive_osc(self, data: bytes, source: str) -> None:
        """Apply a binary OSC packet from a client, as the UDP server would, if the show allows websocket writes;
        problems are counted."""
        self.counts["received"] += 1
        if not self.ws_writes:
            self._problem("refused_writes", f"OSC over websocket from {source} ignored: [oscquery] ws_writes is "
                                            f"off (controllers write to OSC port {self.osc_port})")
            return
        try:
            if OscBundle.dgram_is_bundle(data):
                messages = [timed.message for timed in OscPacket(data).messages]
                for message in messages:
                    check_complete(message.dgram)
            else:
                check_complete(data)
                messages = [OscMessage(data)]
        except Exception as err:  # python-osc raises several unrelated types on junk; all mean 'malformed'
            self._problem("malformed", f"malformed OSC over websocket from {source} ({len(data)} bytes): {err}")
            return
        for message in messages:
            address, args = message.address, list(message.params)
            try:
                if address in self.tree.events:
                    self.tree.emit(address, *args)
                elif address in self.tree.params:
                    if len(args) != 1:
                        raise ValueError(f"{address}: expects one value, got {len(args)}")
                    self.tree.set(address, args[0], source=source)
                else:
                    self._problem("unknown", f"unknown address {address} from {source} (see `live params`)")
                    continue
            except ValueError as err:
                self._problem("bad_value", str(err))
                continue
            self.counts["applied"] += 1

    def _problem(self, kind: str, text: str) -> None:
        self.counts[kind] += 1
        self.last_problem = f"{time.strftime('%H:%M:%S')} {text}"

    # zeroconf

    def _mdns_server(self) -> str:
        """The host record zeroconf announces: our own, since announcing the machine's name with these addresses
        would fight its mDNS responder (avahi, Bonjour) when they differ, e.g. 127.0.0.1 only."""
        hostname = "".join(c if c.isalnum() else "-" for c in f"{self.name}-{socket.gethostname()}")
        return f"{hostname}-{self.port}.local."

    async def _advertise(self) -> None:
        """Register `_oscjson._tcp` (this server) and `_osc._udp` (the OSC port) on the loop; failures are
        reported in stats, never raised: a show plays on without discovery."""
        from zeroconf import IPVersion, ServiceInfo
        from zeroconf.asyncio import AsyncZeroconf

        self.zeroconf_state = "registering"
        try:
            if self.host in _WILDCARD_HOSTS:
                import ifaddr  # zeroconf's own dependency, and what it recommends for listing addresses

                addresses = sorted({ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips if ip.is_IPv4})
            else:
                addresses = sorted({ai[4][0] for ai in socket.getaddrinfo(self.host, None, socket.AF_INET)})
            if not addresses:
                raise OSError("no IPv4 address to announce")
            infos = [ServiceInfo(kind, f"{self.name}.{kind}", port=port, parsed_addresses=addresses,
                                 server=self._mdns_server(), properties={"txtvers": "1"})
                     for kind, port in ((OSCJSON_SERVICE, self.port), (OSC_SERVICE, self.osc_port))]
            aiozc = self._aiozc = AsyncZeroconf(ip_version=IPVersion.V4Only)

            async def register(info: ServiceInfo) -> None:  # probe, then announce: about 1.5 s each
                await (await aiozc.async_register_service(info, allow_name_change=True))

            await asyncio.gather(*(register(info) for info in infos))
            self.zeroconf_state = "registered"
        except asyncio.CancelledError:
            raise
        except Exception as err:
            self.zeroconf_state = f"failed: {err}"
            self.last_problem = f"zeroconf: {err}"

