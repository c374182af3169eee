"""A fake Hetzner Cloud API: a real HTTP server on 127.0.0.1 that speaks the JSON
shapes hcloud parses, keeps state in memory and records every call.

Resources: servers (list with ``name``/``label_selector``/``status`` filters,
create, get, update labels, delete), actions (``running`` until polled
``action_polls`` times, then ``success``), ssh_keys (``name``/``fingerprint``/
``label_selector`` filters, create, delete), firewalls (create with rules and
``apply_to``, ``set_rules``, ``apply_to_resources``, ``remove_from_resources``,
delete — refused while applied), server_types (with per-location availability),
images (``name``/``architecture`` filters), locations. Lists paginate with
``meta.pagination``. Errors are ``{"error": {"code", "message", "details"}}``
with Hetzner's HTTP statuses; every request needs ``Authorization: Bearer <token>``.

Servers get an IPv4 address in 127.0.0.0/8 (127.0.0.2, .3, ...) so a test can
"boot" one by starting an sshd on that address (see ``on_create``). User data is
kept per server.

Fault switches: :meth:`make_unavailable` (create answers ``resource_unavailable``;
with ``advertised`` the server type's location list says so too),
:meth:`fail_creates_after_commit` (the server is created, then the answer is a
504, as when a gateway times out: a retried create meets ``uniqueness_error``),
:meth:`race_create` (a server with that name appears just before the next
create), :meth:`rate_limit` (the next N requests get 429).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import leaks
from .webserver import serve

Json = dict[str, Any]
MAX_USER_DATA = 32 * 1024


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # without /v1 and without the query string
    query: dict[str, list[str]]
    body: Any
    status: int = 0


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def md5_fingerprint(public_key: str) -> str:
    blob = base64.b64decode(public_key.split()[1])
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, 32, 2))


LOCATIONS = [
    {"id": 1, "name": "fsn1", "description": "Falkenstein DC Park 1", "country": "DE",
     "city": "Falkenstein", "latitude": 50.47612, "longitude": 12.370071,
     "network_zone": "eu-central"},
    {"id": 2, "name": "nbg1", "description": "Nuremberg DC Park 1", "country": "DE",
     "city": "Nuremberg", "latitude": 49.452102, "longitude": 11.076665,
     "network_zone": "eu-central"},
    {"id": 3, "name": "hel1", "description": "Helsinki DC Park 1", "country": "FI",
     "city": "Helsinki", "latitude": 60.169855, "longitude": 24.938379,
     "network_zone": "eu-central"},
]  # fmt: skip

_TYPES = [("cx22", 1, 2, 4.0, 40, "x86"), ("cx32", 2, 4, 8.0, 80, "x86"),
          ("cax11", 3, 2, 4.0, 40, "arm")]


@dataclass
class HetznerFake:
    """The fake API. Use as a context manager, or call :meth:`start`/:meth:`stop`."""

    # HCLOUD_TOKEN: random and registered, so the suite's leak check sees it anywhere.
    token: str = field(default_factory=lambda: f"hcloud-{secrets.token_urlsafe(24)}")
    action_polls: int = 1  # GETs of an action that still answer "running"
    on_create: Callable[[Json], None] | None = None  # "boots" a created server
    calls: list[Call] = field(default_factory=list)
    servers: dict[int, Json] = field(default_factory=dict)
    user_data: dict[str, str] = field(default_factory=dict)  # server name -> user data
    ssh_keys: dict[int, Json] = field(default_factory=dict)
    firewalls: dict[int, Json] = field(default_factory=dict)
    actions: dict[int, Json] = field(default_factory=dict)

    def __post_init__(self) -> None:
        leaks.register(self.token)
        self._lock = threading.RLock()
        self._ids = itertools.count(1001)
        self._ips = itertools.count(2)
        self._polls_left: dict[int, int] = {}
        self._on_success: dict[int, Callable[[], None]] = {}
        self._unavailable: set[tuple[str | None, str]] = set()
        self._advertised: set[tuple[str | None, str]] = set()
        self._fail_after_commit = 0
        self._race: Json | None = None
        self._rate_limited = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> HetznerFake:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = serve(self._httpd, poll_interval=0.05)
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> HetznerFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start() first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    # -- what tests look at ----------------------------------------------------

    def writes(self) -> list[Call]:
        return [c for c in self.calls if c.method in ("POST", "PUT", "DELETE")]

    def count(self, method: str, path: str) -> int:
        return sum(1 for c in self.calls if c.method == method and c.path == path)

    def server(self, name: str) -> Json | None:
        with self._lock:
            return next((s for s in self.servers.values() if s["name"] == name), None)

    def firewall(self, name: str) -> Json | None:
        with self._lock:
            return next((f for f in self.firewalls.values() if f["name"] == name), None)

    # -- fault switches and setup ----------------------------------------------

    def make_unavailable(self, location: str, server_type: str | None = None, *,
                         advertised: bool = False) -> None:
        """Creates of ``server_type`` (None: any) in ``location`` get resource_unavailable."""
        with self._lock:
            self._unavailable.add((server_type, location))
            if advertised:
                self._advertised.add((server_type, location))

    def fail_creates_after_commit(self, n: int = 1) -> None:
        with self._lock:
            self._fail_after_commit = n

    def race_create(self, labels: dict[str, str]) -> None:
        """Just before the next server create, a server with its name appears (``labels``)."""
        with self._lock:
            self._race = dict(labels)

    def rate_limit(self, n: int) -> None:
        with self._lock:
            self._rate_limited = n

    def add_server(self, name: str, labels: dict[str, str] | None = None,
                   server_type: str = "cx22", location: str = "fsn1") -> Json:
        """A server made outside forge (no action, already running)."""
        with self._lock:
            return self._new_server(name, server_type, location, labels or {}, "running", "")

    def new_action(self, command: str) -> Json:
        """A running action not tied to any resource (for polling tests)."""
        with self._lock:
            return self._action(command, [])

    def add_firewall(self, name: str, labels: dict[str, str] | None = None) -> Json:
        with self._lock:
            fw: Json = {"id": next(self._ids), "name": name, "labels": labels or {},
                        "created": _now(), "rules": [], "applied_to": []}
            self.firewalls[fw["id"]] = fw
            return fw

    # -- request handling ------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: dict[str, str],
               body: bytes) -> tuple[int, Json | None, dict[str, str], str | None]:
        """(status, JSON payload, extra headers, raw body instead of JSON)."""
        parsed = urllib.parse.urlsplit(raw_path)
        path = parsed.path.removeprefix("/v1")
        query = urllib.parse.parse_qs(parsed.query)
        data: Any = None
        if body:
            try:
                data = json.loads(body)
            except ValueError:
                return self._finish(method, path, query, None,
                                    ApiError(400, "json_error", "invalid JSON in request body"))
        boot: Json | None = None
        with self._lock:
            try:
                if headers.get("authorization") != f"Bearer {self.token}":
                    raise ApiError(401, "unauthorized", "unable to authenticate")
                if self._rate_limited > 0:
                    self._rate_limited -= 1
                    raise ApiError(429, "rate_limit_exceeded", "limit of 3600 requests per hour "
                                   "reached")
                status, payload = self._route(method, path, query, data)
                if method == "POST" and path == "/servers" and status == 201:
                    boot = payload["server"]
                    if self._fail_after_commit > 0:
                        self._fail_after_commit -= 1
                        self.calls.append(Call(method, path, query, data, 504))
                        result: tuple[int, Json | None, dict[str, str], str | None] = (
                            504, None, {}, "<html><body>504 Gateway Time-out</body></html>")
                    else:
                        result = self._finish(method, path, query, data, None, status, payload)
                else:
                    result = self._finish(method, path, query, data, None, status, payload)
            except ApiError as e:
                result = self._finish(method, path, query, data, e)
        if boot is not None and self.on_create is not None:
            self.on_create(boot)  # outside the lock: starting an sshd takes a moment
        return result

    def _finish(self, method: str, path: str, query: dict[str, list[str]], data: Any,
                error: ApiError | None, status: int = 200,
                payload: Json | None = None) -> tuple[int, Json | None, dict[str, str], str | None]:
        headers = {"RateLimit-Limit": "3600", "RateLimit-Remaining": "3599",
                   "RateLimit-Reset": str(int(time.time()) + 1)}
        if error is not None:
            status = error.status
            payload = {"error": {"code": error.code, "message": error.message,
                                 "details": error.details}}
            if error.code == "rate_limit_exceeded":
                headers["RateLimit-Remaining"] = "0"
        self.calls.append(Call(method, path, query, data, status))
        return status, payload, headers, None

    def _route(self, method: str, path: str, query: dict[str, list[str]],
               data: Any) -> tuple[int, Json | None]:
        for pattern, verb, func in self._routes():
            m = re.fullmatch(pattern, path)
            if m and verb == method:
                return func(query, data, *[int(g) for g in m.groups()])
        if any(re.fullmatch(p, path) for p, _, _ in self._routes()):
            raise ApiError(405, "method_not_allowed", f"{method} not allowed on {path}")
        raise ApiError(404, "not_found", f"no route {path}")

    def _routes(self) -> list[tuple[str, str, Callable[..., tuple[int, Json | None]]]]:
        return [
            (r"/servers", "GET", self._list_servers),
            (r"/servers", "POST", self._create_server),
            (r"/servers/(\d+)", "GET", self._get_server),
            (r"/servers/(\d+)", "PUT", self._update_server),
            (r"/servers/(\d+)", "DELETE", self._delete_server),
            (r"/actions/(\d+)", "GET", self._get_action),
            (r"/ssh_keys", "GET", self._list_keys),
            (r"/ssh_keys", "POST", self._create_key),
            (r"/ssh_keys/(\d+)", "GET", self._get_key),
            (r"/ssh_keys/(\d+)", "DELETE", self._delete_key),
            (r"/firewalls", "GET", self._list_firewalls),
            (r"/firewalls", "POST", self._create_firewall),
            (r"/firewalls/(\d+)", "GET", self._get_firewall),
            (r"/firewalls/(\d+)", "DELETE", self._delete_firewall),
            (r"/firewalls/(\d+)/actions/set_rules", "POST", self._set_rules),
            (r"/firewalls/(\d+)/actions/apply_to_resources", "POST", self._apply_to),
            (r"/firewalls/(\d+)/actions/remove_from_resources", "POST", self._remove_from),
            (r"/server_types", "GET", self._list_types),
            (r"/images", "GET", self._list_images),
            (r"/locations", "GET", self._list_locations),
        ]

    # -- catalogue ---------------------------------------------------------------

    def _type(self, name: str) -> Json | None:
        for tname, tid, cores, mem, disk, arch in _TYPES:
            if tname != name:
                continue
            locs = [{"id": loc["id"], "name": loc["name"], "deprecation": None,
                     "available": not ((tname, loc["name"]) in self._advertised
                                       or (None, loc["name"]) in self._advertised),
                     "recommended": True} for loc in LOCATIONS]
            return {"id": tid, "name": tname, "description": tname.upper(), "cores": cores,
                    "memory": mem, "disk": disk, "deprecated": False, "deprecation": None,
                    "prices": [], "storage_type": "local", "cpu_type": "shared",
                    "architecture": arch, "category": "cost_optimized",
                    "included_traffic": 21990232555520, "locations": locs}
        return None

    def _image(self, name: str, arch: str) -> Json:
        return {"id": 161547269 if arch == "x86" else 161547270, "type": "system",
                "status": "available", "name": name, "description": "Ubuntu 24.04",
                "image_size": None, "disk_size": 5, "created": "2024-04-25T00:00:00+00:00",
                "created_from": None, "bound_to": None, "os_flavor": "ubuntu",
                "os_version": "24.04", "rapid_deploy": True, "protection": {"delete": False},
                "deprecated": None, "deleted": None, "labels": {}, "architecture": arch}

    def _list_types(self, query: dict[str, list[str]], _data: Any) -> tuple[int, Json]:
        names = query.get("name")
        items = [t for t in (self._type(n) for n, *_ in _TYPES) if t is not None]
        if names:
            items = [t for t in items if t["name"] in names]
        return 200, _page("server_types", items, query)

    def _list_images(self, query: dict[str, list[str]], _data: Any) -> tuple[int, Json]:
        items = [self._image("ubuntu-24.04", a) for a in ("x86", "arm")]
        if "name" in query:
            items = [i for i in items if i["name"] in query["name"]]
        if "architecture" in query:
            items = [i for i in items if i["architecture"] in query["architecture"]]
        return 200, _page("images", items, query)

    def _list_locations(self, query: dict[str, list[str]], _data: Any) -> tuple[int, Json]:
        items = [dict(loc) for loc in LOCATIONS]
        if "name" in query:
            items = [i for i in items if i["name"] in query["name"]]
        return 200, _page("locations", items, query)

    # -- actions -------------------------------------------------------------------

    def _action(self, command: str, resources: list[tuple[int, str]],
                then: Callable[[], None] | None = None) -> Json:
        action: Json = {"id": next(self._ids), "command": command, "status": "running",
                        "progress": 0, "started": _now(), "finished": None,
                        "resources": [{"id": i, "type": t} for i, t in resources], "error": None}
        self.actions[action["id"]] = action
        self._polls_left[action["id"]] = self.action_polls
        if then is not None:
            self._on_success[action["id"]] = then
        if self.action_polls == 0:
            self._complete(action)
        return dict(action)

    def _complete(self, action: Json) -> None:
        action.update(status="success", progress=100, finished=_now())
        then = self._on_success.pop(action["id"], None)
        if then is not None:
            then()

    def _advance(self, action: Json) -> None:
        # Time passes only when someone looks: each look moves a running action on.
        if action["status"] != "running":
            return
        if self._polls_left[action["id"]] > 0:
            self._polls_left[action["id"]] -= 1
            action["progress"] = 50
        else:
            self._complete(action)

    def _get_action(self, _q: dict[str, list[str]], _d: Any, ident: int) -> tuple[int, Json]:
        action = self.actions.get(ident)
        if action is None:
            raise ApiError(404, "not_found", f"action {ident} not found")
        self._advance(action)
        return 200, {"action": dict(action)}

    def _advance_server(self, server: Json) -> None:
        """A server boots whether or not its action is polled (a lost create answer)."""
        for action in list(self.actions.values()):
            if any(r == {"id": server["id"], "type": "server"} for r in action["resources"]):
                self._advance(action)

    # -- servers -------------------------------------------------------------------

    def _new_server(self, name: str, server_type: str, location: str, labels: dict[str, str],
                    status: str, user_data: str) -> Json:
        st = self._type(server_type)
        loc = next(x for x in LOCATIONS if x["name"] == location)
        n = next(self._ips)
        ident = next(self._ids)
        server: Json = {
            "id": ident, "name": name, "status": status, "created": _now(),
            "public_net": {
                "ipv4": {"id": ident + 500000, "ip": f"127.0.0.{n}", "blocked": False,
                         "dns_ptr": f"static.{n}.0.0.127.clients.your-server.de"},
                "ipv6": {"id": ident + 600000, "ip": f"2001:db8:{n:x}::/64", "blocked": False,
                         "dns_ptr": []},
                "floating_ips": [], "firewalls": [],
            },
            "private_net": [], "server_type": st,
            "datacenter": {"id": loc["id"], "name": f"{location}-dc14",
                           "description": f"{location} DC14", "location": dict(loc)},
            "location": dict(loc),
            "image": self._image("ubuntu-24.04", st["architecture"] if st else "x86"),
            "iso": None, "rescue_enabled": False, "locked": False, "backup_window": None,
            "outgoing_traffic": 0, "ingoing_traffic": 0, "included_traffic": 21990232555520,
            "protection": {"delete": False, "rebuild": False}, "labels": dict(labels),
            "volumes": [], "load_balancers": [], "primary_disk_size": 40,
            "placement_group": None,
        }  # fmt: skip
        self.servers[ident] = server
        self.user_data[name] = user_data
        return server

    def _server_json(self, server: Json) -> Json:
        out = json.loads(json.dumps(server))
        out["public_net"]["firewalls"] = [
            {"id": fw["id"], "status": "applied"} for fw in self.firewalls.values()
            if any(r.get("server", {}).get("id") == server["id"] for r in fw["applied_to"])
        ]
        return out

    def _find_server(self, ident: int) -> Json:
        server = self.servers.get(ident)
        if server is None:
            raise ApiError(404, "not_found", f"server with ID '{ident}' not found")
        return server

    def _list_servers(self, query: dict[str, list[str]], _data: Any) -> tuple[int, Json]:
        items = list(self.servers.values())
        if "name" in query:
            items = [s for s in items if s["name"] in query["name"]]
        if "status" in query:
            items = [s for s in items if s["status"] in query["status"]]
        if "label_selector" in query:
            items = [s for s in items if _select(s["labels"], query["label_selector"][0])]
        return 200, _page("servers", [self._server_json(s) for s in items], query)

    def _get_server(self, _q: dict[str, list[str]], _d: Any, ident: int) -> tuple[int, Json]:
        server = self._find_server(ident)
        self._advance_server(server)
        return 200, {"server": self._server_json(server)}

    def _update_server(self, _q: dict[str, list[str]], data: Any, ident: int) -> tuple[int, Json]:
        server = self._find_server(ident)
        if "labels" in (data or {}):
            server["labels"] = dict(data["labels"])
        if "name" in (data or {}):
            server["name"] = data["name"]
        return 200, {"server": self._server_json(server)}

    def _create_server(self, _q: dict[str, list[str]], data: Any) -> tuple[int, Json]:
        data = data or {}
        for key in ("name", "server_type", "image"):
            if not data.get(key):
                raise ApiError(400, "invalid_input", f"invalid input in field '{key}'",
                               {"fields": [{"name": key, "messages": ["Missing data for "
                                                                     "required field."]}]})
        name = str(data["name"])
        if self._race is not None:
            self._new_server(name, "cx22", "fsn1", self._race, "running", "")
            self._race = None
        if any(s["name"] == name for s in self.servers.values()):
            raise ApiError(409, "uniqueness_error", "server name is already used",
                           {"fields": [{"name": "name"}]})
        st_name = str(data["server_type"])
        if self._type(st_name) is None:
            raise ApiError(400, "invalid_input", f"server type {st_name} not found")
        location = str(data.get("location") or "fsn1")
        if location not in {x["name"] for x in LOCATIONS}:
            raise ApiError(400, "invalid_input", f"location {location} not found")
        if (st_name, location) in self._unavailable or (None, location) in self._unavailable:
            raise ApiError(412, "resource_unavailable",
                           f"server type {st_name} is unavailable in {location}")
        user_data = str(data.get("user_data") or "")
        if len(user_data.encode()) > MAX_USER_DATA:
            raise ApiError(400, "invalid_input", "user_data is limited to 32 KiB")
        for ref in data.get("ssh_keys") or []:
            if not any(k["id"] == ref or k["name"] == ref for k in self.ssh_keys.values()):
                raise ApiError(400, "invalid_input", f"ssh key {ref} not found")
        fw_ids = [int(f["firewall"]) for f in data.get("firewalls") or []]
        for fid in fw_ids:
            if fid not in self.firewalls:
                raise ApiError(404, "not_found", f"firewall {fid} not found")
        server = self._new_server(name, st_name, location, dict(data.get("labels") or {}),
                                  "initializing", user_data)
        for fid in fw_ids:
            self.firewalls[fid]["applied_to"].append({"type": "server",
                                                       "server": {"id": server["id"]}})

        def running() -> None:
            server["status"] = "running"

        action = self._action("create_server", [(server["id"], "server")], then=running)
        start = self._action("start_server", [(server["id"], "server")])
        return 201, {"server": self._server_json(server), "action": action,
                     "next_actions": [start], "root_password": None}

    def _delete_server(self, _q: dict[str, list[str]], _d: Any, ident: int) -> tuple[int, Json]:
        server = self._find_server(ident)
        del self.servers[ident]
        for fw in self.firewalls.values():
            fw["applied_to"] = [r for r in fw["applied_to"]
                                if r.get("server", {}).get("id") != server["id"]]
        return 200, {"action": self._action("delete_server", [(ident, "server")])}

    # -- SSH keys ------------------------------------------------------------------

    def _list_keys(self, query: dict[str, list[str]], _data: Any) -> tuple[int, Json]:
        items = list(self.ssh_keys.values())
        for key in ("name", "fingerprint"):
            if key in query:
                items = [k for k in items if k[key] in query[key]]
        if "label_selector" in query:
            items = [k for k in items if _select(k["labels"], query["label_selector"][0])]
        return 200, _page("ssh_keys", [dict(k) for k in items], query)

    def _get_key(self, _q: dict[str, list[str]], _d: Any, ident: int) -> tuple[int, Json]:
        if ident not in self.ssh_keys:
            raise ApiError(404, "not_found", f"SSH key {ident} not found")
        return 200, {"ssh_key": dict(self.ssh_keys[ident])}

    def _create_key(self, _q: dict[str, list[str]], data: Any) -> tuple[int, Json]:
        data = data or {}
        name, public = str(data.get("name") or ""), str(data.get("public_key") or "")
        try:
            fingerprint = md5_fingerprint(public)
        except (IndexError, ValueError):
            raise ApiError(400, "invalid_input", "invalid public key") from None
        if any(k["name"] == name for k in self.ssh_keys.values()):
            raise ApiError(409, "uniqueness_error", "SSH key with the same name already exists")
        if any(k["fingerprint"] == fingerprint for k in self.ssh_keys.values()):
            raise ApiError(409, "uniqueness_error", "SSH key with the same fingerprint "
                           "already exists")
        key = {"id": next(self._ids), "name": name, "fingerprint": fingerprint,
               "public_key": public, "labels": dict(data.get("labels") or {}), "created": _now()}
        self.ssh_keys[key["id"]] = key
        return 201, {"ssh_key": dict(key)}

    def _delete_key(self, _q: dict[str, list[str]], _d: Any, ident: int) -> tuple[int, None]:
        if self.ssh_keys.pop(ident, None) is None:
            raise ApiError(404, "not_found", f"SSH key {ident} not found")
        return 204, None

    # -- firewalls -----------------------------------------------------------------

    def _find_firewall(self, ident: int) -> Json:
        fw = self.firewalls.get(ident)
        if fw is None:
            raise ApiError(404, "not_found", f"firewall {ident} not found")
        return fw

    def _list_firewalls(self, query: dict[str, list[str]], _data: Any) -> tuple[int, Json]:
        items = list(self.firewalls.values())
        if "name" in query:
            items = [f for f in items if f["name"] in query["name"]]
        if "label_selector" in query:
            items = [f for f in items if _select(f["labels"], query["label_selector"][0])]
        return 200, _page("firewalls", [json.loads(json.dumps(f)) for f in items], query)

    def _get_firewall(self, _q: dict[str, list[str]], _d: Any, ident: int) -> tuple[int, Json]:
        return 200, {"firewall": json.loads(json.dumps(self._find_firewall(ident)))}

    @staticmethod
    def _rules(raw: list[Json]) -> list[Json]:
        rules = []
        for r in raw:
            if r.get("direction") not in ("in", "out") or r.get("protocol") not in (
                    "tcp", "udp", "icmp", "esp", "gre"):
                raise ApiError(400, "invalid_input", "invalid firewall rule")
            if r["protocol"] in ("tcp", "udp") and not r.get("port"):
                raise ApiError(400, "invalid_input", "port is required for tcp and udp")
            rules.append({"direction": r["direction"], "protocol": r["protocol"],
                          "port": r.get("port"), "source_ips": list(r.get("source_ips") or []),
                          "destination_ips": list(r.get("destination_ips") or []),
                          "description": r.get("description")})
        return rules

    def _targets(self, raw: list[Json]) -> list[Json]:
        out = []
        for item in raw:
            if item.get("type") != "server":
                raise ApiError(400, "invalid_input", "only servers are supported by this fake")
            self._find_server(int(item["server"]["id"]))
            out.append({"type": "server", "server": {"id": int(item["server"]["id"])}})
        return out

    def _create_firewall(self, _q: dict[str, list[str]], data: Any) -> tuple[int, Json]:
        data = data or {}
        name = str(data.get("name") or "")
        if not name:
            raise ApiError(400, "invalid_input", "invalid input in field 'name'")
        if any(f["name"] == name for f in self.firewalls.values()):
            raise ApiError(409, "uniqueness_error", "firewall name is already used")
        fw: Json = {"id": next(self._ids), "name": name, "labels": dict(data.get("labels") or {}),
                    "created": _now(), "rules": self._rules(data.get("rules") or []),
                    "applied_to": self._targets(data.get("apply_to") or [])}
        self.firewalls[fw["id"]] = fw
        actions = [self._action("set_firewall_rules", [(fw["id"], "firewall")])]
        actions += [self._action("apply_firewall", [(t["server"]["id"], "server")])
                    for t in fw["applied_to"]]
        return 201, {"firewall": json.loads(json.dumps(fw)), "actions": actions}

    def _delete_firewall(self, _q: dict[str, list[str]], _d: Any, ident: int) -> tuple[int, None]:
        fw = self._find_firewall(ident)
        if fw["applied_to"]:
            raise ApiError(422, "resource_in_use", "firewall is still applied to resources")
        del self.firewalls[ident]
        return 204, None

    def _set_rules(self, _q: dict[str, list[str]], data: Any, ident: int) -> tuple[int, Json]:
        fw = self._find_firewall(ident)
        fw["rules"] = self._rules((data or {}).get("rules") or [])
        return 201, {"actions": [self._action("set_firewall_rules", [(ident, "firewall")])]}

    def _apply_to(self, _q: dict[str, list[str]], data: Any, ident: int) -> tuple[int, Json]:
        fw = self._find_firewall(ident)
        targets = self._targets((data or {}).get("apply_to") or [])
        for t in targets:
            if t in fw["applied_to"]:
                raise ApiError(422, "firewall_already_applied", "firewall already applied")
            fw["applied_to"].append(t)
        return 201, {"actions": [self._action("apply_firewall", [(t["server"]["id"], "server")])
                                 for t in targets]}

    def _remove_from(self, _q: dict[str, list[str]], data: Any, ident: int) -> tuple[int, Json]:
        fw = self._find_firewall(ident)
        targets = self._targets((data or {}).get("remove_from") or [])
        fw["applied_to"] = [t for t in fw["applied_to"] if t not in targets]
        return 201, {"actions": [self._action("remove_firewall", [(t["server"]["id"], "server")])
                                 for t in targets]}


def _page(key: str, items: list[Json], query: dict[str, list[str]]) -> Json:
    page = max(1, int(query.get("page", ["1"])[0]))
    per_page = min(50, max(1, int(query.get("per_page", ["25"])[0])))
    last = max(1, -(-len(items) // per_page))
    chunk = items[(page - 1) * per_page : page * per_page]
    return {key: chunk, "meta": {"pagination": {
        "page": page, "per_page": per_page, "previous_page": page - 1 if page > 1 else None,
        "next_page": page + 1 if page < last else None, "last_page": last,
        "total_entries": len(items)}}}


def _select(labels: dict[str, str], selector: str) -> bool:
    """Hetzner label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``, comma = and."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            ok = labels.get(k.strip()) != v.strip()
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            ok = labels.get(k.strip()) == v.strip()
        elif term.startswith("!"):
            ok = term[1:].strip() not in labels
        else:
            ok = term in labels
        if not ok:
            return False
    return True


class _Handler(BaseHTTPRequestHandler):
    fake: HetznerFake
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes: without this, delayed ACKs cost 40 ms a call.
    disable_nagle_algorithm = True

    def log_message(self, *_args: object) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, payload, extra, raw = self.fake.handle(self.command, self.path, headers, body)
        if raw is not None:
            out, ctype = raw.encode(), "text/html"
        elif payload is None:
            out, ctype = b"", "application/json"
        else:
            out, ctype = json.dumps(payload).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(out)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = _serve
