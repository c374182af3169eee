"""A fake CyberPanel: a real HTTP server on 127.0.0.1 speaking the two APIs forge uses.

Built from CyberPanel's own source (``api/views.py``, ``cloudAPI/views.py``,
``cloudAPI/cloudManager.py``, ``websiteFunctions/website.py``,
``databases/databaseManager.py``, ``plogical/mysqlUtilities.py``,
``CyberCP/secMiddleware.py``); docs/providers-panels.md lists what was checked.

- ``POST /api/<name>``: ``verifyConn``, ``createWebsite``, ``deleteWebsite``, with
  ``adminUser``/``adminPass`` in the JSON body.
- ``POST /cloudAPI/``: ``{"serverUserName": "admin", "controller": ...}`` with
  ``Authorization: Basic <sha256hex("admin:<password>")>``; controllers
  ``verifyLogin``, ``fetchWebsites``, ``statusFunc``, ``submitDBCreation``,
  ``fetchDatabases``, ``ChangeLinuxUserPassword``, ``addSSHKey``, ``submitDomainCreation``
  and ``fetchDomains`` (child domains, whose ``path`` under ``/home/<master>/`` is
  fixed at creation: the API's only way to choose a document root).

Quirks kept: every answer is HTTP 200 with a per-view status key (``verifyConn``,
``createWebSiteStatus``, ``websiteDeleteStatus``, ``createDBStatus``,
``fetchStatus``, ``status``, ``add_status`` with ``error_mssage``); a missing
``adminUser`` (or an unknown one) on ``createWebsite`` and an unknown cloudAPI
controller are an HTML 500; the security middleware refuses ``/api/`` values
holding `` ` $ & ( ) [ ] { } ; : ' < > | `` (``verifyConn`` exempt, so a bad
admin password passes it and fails ``createWebsite``) with no status key at all;
website creation answers success at once and writes its real outcome (duplicate
domain, unknown package) to a status file read by polling ``statusFunc``, which
deletes the file once it reported success; ``fetchWebsites``/``fetchDatabases``
return their list as a JSON *string*; database names are used verbatim, at most
32 characters; ``ChangeLinuxUserPassword`` answers success even when the shell
command it builds breaks on a ``'`` in the password (the password is not set).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import leaks
from .webserver import serve

Json = dict[str, Any]

HTML_500 = b"\n<!doctype html>\n<html lang=\"en\">\n<head>\n  <title>Server Error (500)</title>\n" \
           b"</head>\n<body>\n  <h1>Server Error (500)</h1><p></p>\n</body>\n</html>\n"
_REFUSED = ("Data supplied is not accepted, following characters are not allowed in the "
            "input ` $ & ( ) [ ] { } ; : \u2018 < >.")
_BAD_PIECES = ("- -", "\n", ";", "&&", "|", "...", "`", "$", "(", ")", "'", "[", "]", "{", "}",
               ":", "<", ">", "&")
# Keys the middleware lets through unchecked (a subset of its list: the ones forge could send).
_EXEMPT_KEYS = frozenset({"ownerPassword", "key", "cert", "configData", "fileContent",
                          "commands"})
_EXEMPT_URLS = ("api/remoteTransfer", "api/verifyConn", "submitUserCreation")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")


def cloud_token(user: str, password: str) -> str:
    """The Authorization value cloudAPI compares against (CyberPanel 2.3.5 and later)."""
    return "Basic " + hashlib.sha256(f"{user}:{password}".encode()).hexdigest()


@dataclass(frozen=True)
class Call:
    path: str  # "/api/createWebsite" or "/cloudAPI/"
    name: str  # the view or the controller
    body: Any
    status: int


@dataclass
class CyberPanelFake:
    """The fake server. Use as a context manager, or call :meth:`start`/:meth:`stop`."""

    admin_user: str = "admin"
    admin_password: str = field(default_factory=lambda: f"cp-{secrets.token_urlsafe(18)}")
    api_enabled: bool = True
    creation_polls: int = 2  # statusFunc answers "in progress" this many times first
    packages: set[str] = field(default_factory=lambda: {"Default"})
    calls: list[Call] = field(default_factory=list)
    websites: dict[str, Json] = field(default_factory=dict)
    databases: dict[str, Json] = field(default_factory=dict)
    linux_passwords: dict[str, str] = field(default_factory=dict)  # linux user -> password
    root_keys: list[str] = field(default_factory=list)
    child_domains: dict[str, Json] = field(default_factory=dict)  # domain -> master, path
    users: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        leaks.register(self.admin_password)
        self._lock = threading.RLock()
        self._files: dict[str, list[str]] = {}  # status file -> lines written so far
        self._jobs: dict[str, tuple[int, str, Json | None]] = {}  # polls left, outcome, site
        self._file_ids = itertools.count(1000)
        self._app_ids = itertools.count(1001)
        self._httpd: ThreadingHTTPServer | None = None
        self._unavailable = 0

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> CyberPanelFake:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        serve(self._httpd, poll_interval=0.05)
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> CyberPanelFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start() first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # -- what tests look at ----------------------------------------------------

    def names(self) -> list[str]:
        """The views and controllers called, in order."""
        return [c.name for c in self.calls]

    def count(self, name: str) -> int:
        return sum(1 for c in self.calls if c.name == name)

    def unavailable(self, n: int) -> None:
        """The next ``n`` requests get HTTP 503 (a proxy in front of a restarting lscpd)."""
        with self._lock:
            self._unavailable = n

    def add_website(self, domain: str, *, owner: str = "admin", package: str = "Default") -> Json:
        """A website made outside forge (already complete)."""
        with self._lock:
            site = self._site(domain, owner, package, "owner@example.org")
            self.websites[domain] = site
            return site

    # -- the views -------------------------------------------------------------

    def handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, bytes]:
        with self._lock:
            if self._unavailable > 0:
                self._unavailable -= 1
                self.calls.append(Call(path, "unavailable", None, 503))
                return 503, b"<h1>503 Service Unavailable</h1>"
            status, body, name = self._route(path, headers, raw)
            parsed: Any
            try:
                parsed = json.loads(raw or b"null")
            except ValueError:
                parsed = raw.decode(errors="replace")
            self.calls.append(Call(path, name, parsed, status))
            if isinstance(body, bytes):
                return status, body
            return status, json.dumps(body).encode()

    def _route(self, path: str, headers: dict[str, str],
               raw: bytes) -> tuple[int, Json | bytes, str]:
        if path.startswith("/api/"):
            view = path[len("/api/"):]
            refused = self._middleware(path, raw)
            if refused is not None:
                return 200, refused, view
            fn = {"verifyConn": self._verify_conn, "createWebsite": self._create_website,
                  "deleteWebsite": self._delete_website}.get(view)
            if fn is None:
                return 404, b"<h1>Not Found</h1>", view
            try:
                data = json.loads(raw)
            except ValueError:
                return 500, HTML_500, view
            try:
                return 200, fn(data), view
            except _Crash:
                return 500, HTML_500, view
        if path in ("/cloudAPI/", "/cloudAPI"):
            return self._cloud(headers, raw)
        return 404, b"<h1>Not Found</h1>", path

    def _middleware(self, path: str, raw: bytes) -> Json | None:
        try:
            data = json.loads(raw)
            items = list(data.items())
        except (ValueError, AttributeError):
            return None  # the middleware lets the view fail on it
        for key, value in items:
            if not isinstance(value, str) or any(u in path for u in _EXEMPT_URLS):
                continue
            if key in _EXEMPT_KEYS:
                continue
            if any(piece in value for piece in _BAD_PIECES):
                return {"error_message": _REFUSED, "errorMessage": _REFUSED}
        return None

    def _admin(self, name: str) -> None:
        if name != self.admin_user:
            raise _Missing("Administrator matching query does not exist.")

    def _verify_conn(self, data: Json) -> Json:
        try:
            user, password = data["adminUser"], data["adminPass"]
            self._admin(user)
        except KeyError as e:
            return {"verifyConn": 0, "error_message": repr(e.args[0])}
        except _Missing as e:
            return {"verifyConn": 0, "error_message": str(e)}
        if not self.api_enabled:
            return {"verifyConn": 0, "error_message": "API Access Disabled."}
        return {"verifyConn": 1 if password == self.admin_password else 0}

    def _create_website(self, data: Json) -> Json:
        # The view reads adminUser and looks the admin up outside any try: a crash.
        if "adminUser" not in data or data["adminUser"] != self.admin_user:
            raise _Crash
        if not self.api_enabled:
            return {"existsStatus": 0, "createWebSiteStatus": 0,
                    "error_message": "API Access Disabled."}
        try:
            password = data["adminPass"]
            email, owner = data["ownerEmail"], data["websiteOwner"]
            data["ownerPassword"]  # the real view reads (and requires) it here
            package = data["packageName"]
            if password != self.admin_password:
                return {"existsStatus": 0, "createWebSiteStatus": 0,
                        "error_message": "Could not authorize access to API"}
            self.users.add(owner.lower())
            domain = data["domainName"]
        except KeyError as e:
            return {"createWebSiteStatus": 0, "error_message": repr(e.args[0]), "existsStatus": 0}
        if not _DOMAIN.match(domain):
            return {"status": 0, "createWebSiteStatus": 0, "error_message": "Invalid domain."}
        if not _EMAIL.match(email) or "--" in email:
            return {"status": 0, "createWebSiteStatus": 0, "error_message": "Invalid email."}
        status_file = f"/home/cyberpanel/{next(self._file_ids)}"
        site = self._site(domain, owner.lower(), package, email)
        if domain in self.websites:
            outcome, made = "This website already exists. [404]", None
        elif package not in self.packages:
            outcome, made = "Package matching query does not exist. [404]", None
        else:
            outcome, made = "Website successfully created. [200]", site
        self._files[status_file] = ["Running some checks..,0"]
        self._jobs[status_file] = (self.creation_polls, outcome, made)
        return {"status": 1, "createWebSiteStatus": 1, "error_message": "None",
                "tempStatusPath": status_file, "LinuxUser": site["externalApp"]}

    def _delete_website(self, data: Json) -> Json:
        try:
            self._admin(data["adminUser"])
            password, domain = data["adminPass"], data["domainName"]
        except (KeyError, _Missing) as e:
            return {"websiteDeleteStatus": 0, "error_message": _text(e)}
        if password != self.admin_password:
            return {"websiteDeleteStatus": 0, "error_message": "Could not authorize access to API"}
        if domain not in self.websites:
            return {"websiteDeleteStatus": 0,
                    "error_message": "Websites matching query does not exist."}
        del self.websites[domain]
        for name in [n for n, db in self.databases.items() if db["website"] == domain]:
            del self.databases[name]
        return {"status": 1, "websiteDeleteStatus": 1, "error_message": "None"}

    def _site(self, domain: str, owner: str, package: str, email: str) -> Json:
        app = "".join(re.findall("[a-zA-Z]+", domain))[:5] + str(next(self._app_ids))
        return {"domain": domain, "adminEmail": email, "ipAddress": "127.0.0.1", "admin": owner,
                "package": package, "state": "Active", "diskUsed": "0MB",
                "phpVersion": "PHP 8.1", "externalApp": app}

    # -- cloudAPI --------------------------------------------------------------

    def _cloud(self, headers: dict[str, str], raw: bytes) -> tuple[int, Json | bytes, str]:
        try:
            data = json.loads(raw)
            controller = data["controller"]
            user = data["serverUserName"]
            self._admin(user)
        except (ValueError, KeyError, TypeError, _Missing) as e:
            return 200, {"status": 0, "error_message": _text(e)}, "cloudAPI"
        if user != "admin":
            return 200, {"status": 0, "error_message": "Only administrator can access API."}, \
                controller
        if not self.api_enabled:
            return 200, {"status": 0, "error_message": "API Access Disabled."}, controller
        if headers.get("authorization") != cloud_token(user, self.admin_password):
            return 200, {"status": 0, "error_message": "Invalid login information."}, controller
        fn = {"verifyLogin": lambda _d: {"status": 1, "error_message": None},
              "fetchWebsites": self._fetch_websites, "statusFunc": self._status_func,
              "submitDBCreation": self._db_create, "fetchDatabases": self._fetch_databases,
              "ChangeLinuxUserPassword": self._linux_password,
              "addSSHKey": self._add_ssh_key, "submitDomainCreation": self._child_create,
              "fetchDomains": self._fetch_domains}.get(controller)
        if fn is None:
            return 500, HTML_500, controller  # the router returns None: Django crashes
        return 200, fn(data), controller

    def _fetch_websites(self, data: Json) -> Json:
        try:
            page = int(data["page"])
        except (KeyError, ValueError) as e:
            return {"status": 1, "listWebSiteStatus": 0, "error_message": _text(e)}
        sites = sorted(self.websites.values(), key=lambda s: s["domain"])
        shown = [{k: v for k, v in s.items() if k != "externalApp"}
                 for s in sites[(page - 1) * 10: page * 10]]
        pages = max(1, -(-len(sites) // 10))
        pagination = [f'<li><a href="\\#">{i}</a></li>' for i in range(1, pages + 1)]
        return {"status": 1, "listWebSiteStatus": 1, "error_message": "None",
                "data": json.dumps(shown), "pagination": pagination}

    def _status_func(self, data: Json) -> Json:
        try:
            path = data["statusFile"]
        except KeyError as e:
            return {"status": 0, "abort": 0, "installationProgress": "0", "errorMessage": _text(e)}
        if not re.fullmatch(r"/home/cyberpanel/\d+", path):
            return {"abort": 1, "installStatus": 0, "installationProgress": "100",
                    "currentStatus": "Invalid status file."}
        if path not in self._files:
            return {"status": 0, "abort": 0, "installationProgress": "0",
                    "errorMessage": f"[Errno 2] No such file or directory: '{path}'"}
        self._advance(path)
        last = self._files[path][-1]
        if "[200]" in last:
            del self._files[path]  # the real view removes the file once it said so
            return {"status": 1, "abort": 1, "installationProgress": "100", "currentStatus": last}
        if "[404]" in last:
            return {"status": 0, "abort": 1, "installationProgress": "0", "error_message": last}
        step, _, progress = last.partition(",")
        return {"status": 1, "abort": 0, "installationProgress": progress or 0,
                "currentStatus": step}

    def _advance(self, path: str) -> None:
        job = self._jobs.get(path)
        if job is None:
            return
        left, outcome, site = job
        if left > 0:
            self._files[path].append(f"Setting up directories..,{100 - 25 * left}")
            self._jobs[path] = (left - 1, outcome, site)
            return
        if site is not None and "master" in site:
            self.child_domains[site["domain"]] = site
        elif site is not None:
            self.websites[site["domain"]] = site
        self._files[path].append(outcome)
        del self._jobs[path]

    def _child_create(self, data: Json) -> Json:
        try:
            master, domain = data["masterDomain"], data["domainName"]
            data["phpSelection"]  # read (and required) when not an alias
            path = data["path"]
        except KeyError as e:
            return {"status": 0, "createWebSiteStatus": 0, "error_message": _text(e)}
        if not _DOMAIN.match(domain):
            return {"status": 0, "createWebSiteStatus": 0, "error_message": "Invalid domain."}
        if ".." in path:
            return {"status": 0, "createWebSiteStatus": 0,
                    "errorMessage": "You are not authorized to access this resource.",
                    "error_message": "You are not authorized to access this resource."}
        if "openBasedir" not in data:  # an admin's request must carry it
            return {"status": 0, "createWebSiteStatus": 0, "error_message": "'openBasedir'"}
        full = f"/home/{master}/{path.lstrip('/')}" if path else f"/home/{master}/{domain}"
        status_file = f"/home/cyberpanel/{next(self._file_ids)}"
        child: Json | None = None
        if domain in self.websites:
            outcome = "This Domain already exists as a website. [404]"
        elif domain in self.child_domains:
            outcome = "This domain already exists as child domain. [404]"
        elif master not in self.websites:
            outcome = "Websites matching query does not exist.. [404]"
        else:
            outcome = "Domain successfully created. [200]"
            child = {"domain": domain, "master": master, "path": full}
        self._files[status_file] = ["Running some checks..,0"]
        self._jobs[status_file] = (self.creation_polls, outcome, child)
        return {"status": 1, "createWebSiteStatus": 1, "error_message": "None",
                "tempStatusPath": status_file}

    def _fetch_domains(self, data: Json) -> Json:
        try:
            master = data["masterDomain"]
            if master not in self.websites:
                raise _Missing("Websites matching query does not exist.")
        except (KeyError, _Missing) as e:
            return {"status": 0, "fetchStatus": 0, "error_message": _text(e)}
        rows = [{"childDomain": c["domain"], "path": c["path"],
                 "childLunch": f"/websites/{master}/{c['domain']}"}
                for c in self.child_domains.values() if c["master"] == master]
        return {"status": 1, "fetchStatus": 1, "error_message": "None", "data": json.dumps(rows)}

    def _db_create(self, data: Json) -> Json:
        try:
            website, name = data["databaseWebsite"], data["dbName"]
            user, password = data["dbUsername"], data["dbPassword"]
            data["webUserName"]  # read (and required) even on this path
        except KeyError as e:
            return {"status": 0, "createDBStatus": 0, "error_message": _text(e)}
        if len(name) > 32 or len(user) > 32:
            return {"status": 0, "createDBStatus": 0, "error_message":
                    "Length of Database name or Database user should be 32 at max."}
        if website not in self.websites:
            return {"status": 0, "createDBStatus": 0,
                    "error_message": "Websites matching query does not exist."}
        if name in self.databases or any(d["dbUser"] == user for d in self.databases.values()):
            return {"status": 0, "createDBStatus": 0,
                    "error_message": "This database or user is already taken."}
        self.databases[name] = {"id": len(self.databases) + 1, "dbName": name, "dbUser": user,
                                "website": website, "password": password}
        return {"status": 1, "createDBStatus": 1, "error_message": "None"}

    def _fetch_databases(self, data: Json) -> Json:
        try:
            website = data["databaseWebsite"]
        except KeyError as e:
            return {"status": 0, "fetchStatus": 0, "error_message": _text(e)}
        if website not in self.websites:
            return {"status": 0, "fetchStatus": 0,
                    "error_message": "Websites matching query does not exist."}
        rows = [{"id": d["id"], "dbName": d["dbName"], "dbUser": d["dbUser"]}
                for d in self.databases.values() if d["website"] == website]
        return {"status": 1, "fetchStatus": 1, "error_message": "None", "data": json.dumps(rows)}

    def _linux_password(self, data: Json) -> Json:
        try:
            domain, password = data["domain"], data["password"]
            if domain not in self.websites:
                raise _Missing("Websites matching query does not exist.")
        except (KeyError, _Missing) as e:
            return {"status": 0, "installStatus": 0, "error_message": _text(e)}
        app = self.websites[domain]["externalApp"]
        if "'" not in password and "\n" not in password:
            self.linux_passwords[app] = password  # else the shell line breaks, unnoticed
        return {"status": 1, "error_message": "None", "LinuxUser": app}

    def _add_ssh_key(self, data: Json) -> Json:
        try:
            key = data["key"]
        except KeyError as e:
            return {"status": 0, "add_status": 0, "error_mssage": _text(e)}
        if not re.match(r"^(ssh-(ed25519|rsa)|ecdsa-sha2-\S+) [A-Za-z0-9+/=]+( .*)?$", key):
            return {"status": 0, "add_status": 0, "error_mssage": "0,Invalid public key."}
        self.root_keys.append(key)
        return {"status": 1, "add_status": 1}


class _Crash(Exception):
    """A view fails outside its try: Django answers its HTML 500 page."""


class _Missing(Exception):
    """A Django ``DoesNotExist``."""


def _text(e: BaseException) -> str:
    if isinstance(e, KeyError):
        return repr(e.args[0])
    return str(e)


class _Handler(BaseHTTPRequestHandler):
    fake: CyberPanelFake
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, body = self.fake.handle(self.path.split("?")[0], headers, raw)
        self.send_response(status)
        # Django's HttpResponse default, for the JSON answers too.
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
