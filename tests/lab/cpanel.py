"""A fake cPanel account: UAPI and API 2 over HTTPS on 127.0.0.1, from cPanel's docs.

Served over TLS with a certificate from a CA made for each fake (``ca_file``), so
the client is tested the way it runs: verifying the server, given a CA file.

- UAPI ``GET /execute/<Module>/<function>?...``: answers ``{"status", "errors",
  "messages", "warnings", "metadata", "data"}``; a failure is HTTP 200 with
  ``status: 0`` and ``errors``. Functions: ``DomainInfo::list_domains``,
  ``DomainInfo::single_domain_data``, ``SubDomain::addsubdomain``,
  ``Mysql::get_restrictions``, ``Mysql::list_databases``, ``Mysql::create_database``,
  ``Mysql::create_user``, ``Mysql::set_privileges_on_database``, ``SSH::get_shell``.
- API 2 ``GET /json-api/cpanel?cpanel_jsonapi_apiversion=2&cpanel_jsonapi_module=M&
  cpanel_jsonapi_func=F&...``: answers ``{"cpanelresult": {"event": {"result": 1},
  "data": [...], ...}}``, a failure adding ``error`` (and ``result: 0`` in data).
  Functions: ``AddonDomain::addaddondomain``, ``SSH::importkey``, ``SSH::authkey``,
  ``SSH::listkeys`` (public keys only with ``types=pub``).
- ``Authorization: cpanel <user>:<token>``; a wrong one is HTTP 401, a token of
  another account 403.

Quirk kept: "Restrict document roots to public_html" is on by default
(``restrict_docroots``): a ``dir`` outside ``public_html`` is put under it and
success is reported; the document root is made as with ``mkdir -p`` (``dirs``).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import secrets
import shutil
import ssl
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from . import leaks
from ._proc import lab_root
from .webserver import serve

Json = dict[str, Any]
_PRIVILEGES = frozenset({"ALL PRIVILEGES", "ALL", "SELECT", "INSERT", "UPDATE", "DELETE",
                         "CREATE", "DROP", "ALTER", "INDEX", "REFERENCES", "LOCK TABLES",
                         "CREATE TEMPORARY TABLES", "CREATE VIEW", "SHOW VIEW", "TRIGGER",
                         "EVENT", "EXECUTE", "CREATE ROUTINE", "ALTER ROUTINE"})


@dataclass(frozen=True)
class Call:
    api: str  # "uapi" or "api2"
    name: str  # "Module::function"
    params: dict[str, str]
    status: int


@dataclass
class CpanelFake:
    """The fake account. Use as a context manager, or call :meth:`start`/:meth:`stop`."""

    user: str = "libyan"
    token: str = field(default_factory=lambda: secrets.token_hex(16).upper())
    main_domain: str = "example.ly"
    restrict_docroots: bool = True
    shell: str = "/usr/local/cpanel/bin/jailshell"
    calls: list[Call] = field(default_factory=list)
    domains: dict[str, Json] = field(default_factory=dict)  # domain -> single_domain_data
    dirs: set[str] = field(default_factory=set)  # directories made (absolute)
    databases: dict[str, set[str]] = field(default_factory=dict)  # db -> users with privileges
    db_users: dict[str, str] = field(default_factory=dict)  # user -> password
    keys: dict[str, Json] = field(default_factory=dict)  # name -> {key, authorized}
    other_tokens: set[str] = field(default_factory=set)  # valid tokens of other accounts

    def __post_init__(self) -> None:
        leaks.register(self.token)
        self._lock = threading.RLock()
        self.home = f"/home/{self.user}"
        self._add_domain(self.main_domain, "main_domain", f"{self.home}/public_html")
        self._httpd: ThreadingHTTPServer | None = None
        self._unavailable = 0
        self.workdir = lab_root()
        self.ca_file = self.workdir / "ca.pem"

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> CpanelFake:
        cert, key = _make_tls(self.workdir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        serve(self._httpd, poll_interval=0.05)
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> CpanelFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start() first"
        return f"https://127.0.0.1:{self._httpd.server_address[1]}"

    # -- what tests look at ----------------------------------------------------

    def names(self) -> list[str]:
        return [c.name for c in self.calls]

    def count(self, name: str) -> int:
        return sum(1 for c in self.calls if c.name == name)

    def unavailable(self, n: int) -> None:
        """The next ``n`` requests get HTTP 503 (cpsrvd restarting)."""
        with self._lock:
            self._unavailable = n

    def add_subdomain(self, fqdn: str, reldir: str) -> None:
        """A subdomain made outside forge."""
        with self._lock:
            self._add_domain(fqdn, "sub_domain", f"{self.home}/{reldir.strip('/')}")

    # -- dispatch --------------------------------------------------------------

    def handle(self, path: str, query: dict[str, str], auth: str | None) -> tuple[int, Json | str]:
        with self._lock:
            if self._unavailable > 0:
                self._unavailable -= 1
                self.calls.append(Call("none", "unavailable", {}, 503))
                return 503, "Service Unavailable"
            status, body, api, name = self._route(path, query, auth)
            shown = {k: ("<secret>" if k in ("password", "key") else v) for k, v in query.items()}
            self.calls.append(Call(api, name, shown, status))
            return status, body

    def _route(self, path: str, q: dict[str, str],
               auth: str | None) -> tuple[int, Json | str, str, str]:
        if path.startswith("/execute/"):
            api, name = "uapi", "::".join(path[len("/execute/"):].split("/")[:2])
        elif path == "/json-api/cpanel":
            api = "api2"
            name = f"{q.get('cpanel_jsonapi_module', '')}::{q.get('cpanel_jsonapi_func', '')}"
        else:
            return 404, "Not Found", "none", path
        refused = self._auth(auth)
        if refused is not None:
            return refused, "Access denied", api, name  # cPanel's plain-text refusal
        if api == "uapi":
            return 200, self._uapi(name, q), api, name
        if q.get("cpanel_jsonapi_apiversion") != "2":
            return 200, {"cpanelresult": {"error": "Unsupported API version"}}, api, name
        return 200, self._api2(name, q), api, name

    def _auth(self, auth: str | None) -> int | None:
        if auth is None or not auth.startswith("cpanel "):
            return 401
        user, _, token = auth[len("cpanel "):].partition(":")
        if user == self.user and token == self.token:
            return None
        if token in self.other_tokens:
            return 403
        return 401

    # -- UAPI ------------------------------------------------------------------

    def _uapi(self, name: str, q: dict[str, str]) -> Json:
        fn = {"DomainInfo::list_domains": self._list_domains,
              "DomainInfo::single_domain_data": self._single_domain_data,
              "SubDomain::addsubdomain": self._addsubdomain,
              "Mysql::get_restrictions": lambda _q: {"prefix": self._prefix,
                                                     "max_database_name_length": 64,
                                                     "max_username_length": 47},
              "Mysql::list_databases": self._list_databases,
              "Mysql::create_database": self._create_database,
              "Mysql::create_user": self._create_user,
              "Mysql::set_privileges_on_database": self._set_privileges,
              "SSH::get_shell": lambda _q: {"has_terminal_access": self.shell != "/bin/false"
                                            and self.shell != "/usr/local/cpanel/bin/noshell",
                                            "shell": self.shell}}.get(name)
        if fn is None:
            module, _, func = name.partition("::")
            return _uapi_fail(f"Failed to load module \u201c{module}\u201d: unknown function "
                              f"\u201c{func}\u201d.")
        try:
            return {"status": 1, "errors": None, "messages": None, "warnings": None,
                    "metadata": {}, "data": fn(q)}
        except _Refused as e:
            return _uapi_fail(str(e))

    @property
    def _prefix(self) -> str:
        return f"{self.user[:8]}_"

    def _add_domain(self, domain: str, kind: str, docroot: str) -> None:
        self.domains[domain] = {"domain": domain, "documentroot": docroot, "homedir": self.home,
                                "user": self.user, "type": kind, "servername": domain,
                                "serveralias": f"www.{domain}", "ip": "127.0.0.1",
                                "port": "80", "usecanonicalname": "Off"}
        parts = docroot.split("/")
        self.dirs.update("/".join(parts[:i]) for i in range(3, len(parts) + 1))  # mkdir -p

    def _docroot(self, reldir: str) -> str:
        rel = reldir.strip("/")
        if self.restrict_docroots and rel != "public_html" and not rel.startswith("public_html/"):
            rel = f"public_html/{rel}"  # moved, and success still reported
        return f"{self.home}/{rel}"

    def _list_domains(self, _q: dict[str, str]) -> Json:
        by = {k: sorted(d for d, v in self.domains.items() if v["type"] == k)
              for k in ("addon_domain", "sub_domain", "parked_domain")}
        return {"main_domain": self.main_domain, "addon_domains": by["addon_domain"],
                "sub_domains": by["sub_domain"], "parked_domains": by["parked_domain"]}

    def _single_domain_data(self, q: dict[str, str]) -> Json:
        domain = _need(q, "domain").lower()
        if domain not in self.domains:
            raise _Refused(f"The domain \u201c{domain}\u201d does not belong to "
                           f"\u201c{self.user}\u201d.")
        return dict(self.domains[domain])

    def _addsubdomain(self, q: dict[str, str]) -> None:
        label, root = _need(q, "domain").lower(), _need(q, "rootdomain").lower()
        if root not in self.domains:
            raise _Refused(f"The domain \u201c{root}\u201d does not belong to this account.")
        fqdn = f"{label}.{root}"
        if fqdn in self.domains:
            raise _Refused(f"The subdomain \u201c{fqdn}\u201d already exists.")
        self._add_domain(fqdn, "sub_domain", self._docroot(q.get("dir") or f"public_html/{label}"))

    def _list_databases(self, _q: dict[str, str]) -> list[Json]:
        return [{"database": db, "disk_usage": 0, "users": sorted(users)}
                for db, users in sorted(self.databases.items())]

    def _create_database(self, q: dict[str, str]) -> None:
        name = _need(q, "name")
        if not name.startswith(self._prefix):
            raise _Refused(f"The name \u201c{name}\u201d must begin with "
                           f"\u201c{self._prefix}\u201d.")
        if len(name) > 64:
            raise _Refused(f"The name \u201c{name}\u201d is longer than 64 characters.")
        if name in self.databases:
            raise _Refused(f"The database \u201c{name}\u201d already exists.")
        self.databases[name] = set()

    def _create_user(self, q: dict[str, str]) -> None:
        name, password = _need(q, "name"), _need(q, "password")
        if not name.startswith(self._prefix):
            raise _Refused(f"The name \u201c{name}\u201d must begin with "
                           f"\u201c{self._prefix}\u201d.")
        if len(name) > 47:
            raise _Refused(f"The name \u201c{name}\u201d is longer than 47 characters.")
        if name in self.db_users:
            raise _Refused(f"The user \u201c{name}\u201d already exists.")
        if len(password) < 8:
            raise _Refused("The password is too weak (strength below 65).")
        self.db_users[name] = password

    def _set_privileges(self, q: dict[str, str]) -> None:
        user, db = _need(q, "user"), _need(q, "database")
        privileges = {p.strip().upper() for p in _need(q, "privileges").split(",")}
        if db not in self.databases:
            raise _Refused(f"The database \u201c{db}\u201d does not exist.")
        if user not in self.db_users:
            raise _Refused(f"The user \u201c{user}\u201d does not exist.")
        if not privileges <= _PRIVILEGES:
            raise _Refused(f"Invalid privileges: {', '.join(sorted(privileges - _PRIVILEGES))}")
        self.databases[db].add(user)

    # -- API 2 -----------------------------------------------------------------

    def _api2(self, name: str, q: dict[str, str]) -> Json:
        module, _, func = name.partition("::")
        result: Json = {"apiversion": 2, "module": module, "func": func,
                        "event": {"result": 1}, "preevent": {"result": 1},
                        "postevent": {"result": 1}}
        fn = {"AddonDomain::addaddondomain": self._addaddondomain,
              "SSH::importkey": self._importkey, "SSH::authkey": self._authkey,
              "SSH::listkeys": self._listkeys}.get(name)
        try:
            if fn is None:
                raise _Refused(f"Could not find function '{func}' in module '{module}'")
            result["data"] = fn(q)
        except _Refused as e:
            result["data"] = [{"result": 0, "reason": str(e)}]
            result["error"] = str(e)
        return {"cpanelresult": result}

    def _addaddondomain(self, q: dict[str, str]) -> list[Json]:
        new, label = _need(q, "newdomain").lower(), _need(q, "subdomain").lower()
        if new in self.domains:
            raise _Refused(f"The domain \u201c{new}\u201d already exists in the Apache "
                           f"configuration.")
        self._add_domain(new, "addon_domain", self._docroot(q.get("dir") or f"public_html/{label}"))
        return [{"result": 1, "reason": f"The system successfully parked (aliased) the domain "
                                        f"\u201c{new}\u201d on top of the domain "
                                        f"\u201c{label}.{self.main_domain}\u201d."}]

    def _importkey(self, q: dict[str, str]) -> list[Json]:
        name, key = _need(q, "name"), _need(q, "key")
        if not key.startswith(("ssh-ed25519 ", "ssh-rsa ", "ecdsa-sha2-")):
            raise _Refused("The key is not a valid public SSH key.")
        self.keys[name] = {"key": key.strip(), "authorized": False}  # overwrites by name
        return [{"name": name}]

    def _authkey(self, q: dict[str, str]) -> list[Json]:
        name, action = _need(q, "key"), q.get("action", "authorize")
        if name not in self.keys:
            raise _Refused(f"The key \u201c{name}\u201d does not exist.")
        self.keys[name]["authorized"] = action == "authorize"
        return [{"key": name, "status": "authorized" if action == "authorize" else
                 "deauthorized"}]

    def _listkeys(self, q: dict[str, str]) -> list[Json]:
        if q.get("types") != "pub":
            return []  # the default lists private keys; forge imports public ones only
        rows = []
        for name, k in sorted(self.keys.items()):
            row = {"name": name, "file": f"{self.home}/.ssh/{name}.pub",
                   "authstatus": "authorized" if k["authorized"] else "not authorized"}
            if q.get("pub") == "1":
                row["key"] = k["key"]
            rows.append(row)
        return rows


class _Refused(Exception):
    pass


def _need(q: dict[str, str], name: str) -> str:
    value = q.get(name)
    if not value:
        raise _Refused(f"You must specify the \u201c{name}\u201d parameter.")
    return value


def _uapi_fail(message: str) -> Json:
    return {"status": 0, "errors": [message], "messages": None, "warnings": None,
            "metadata": {}, "data": None}


def _make_tls(workdir: Path) -> tuple[Path, Path]:
    """A CA (written to ``ca.pem``) and a server certificate for 127.0.0.1 it signed."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forge lab cPanel CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (workdir / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path, key_path = workdir / "server.pem", workdir / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class _Handler(BaseHTTPRequestHandler):
    fake: CpanelFake
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
        status, body = self.fake.handle(parsed.path, query, self.headers.get("Authorization"))
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if isinstance(body, str) else
                         "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_POST = do_GET
