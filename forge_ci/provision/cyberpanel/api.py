"""CyberPanel's HTTP APIs behind one narrow door: every request goes through ``_post``.

CyberPanel has two APIs and forge needs both:

- ``POST /api/<view>`` with ``adminUser``/``adminPass`` in the JSON body
  (``verifyConn``, ``createWebsite``, ``deleteWebsite``);
- ``POST /cloudAPI/`` with ``serverUserName`` and ``controller`` in the body and
  ``Authorization: Basic <sha256 hex of "admin:<password>">``
  (listing websites and databases, creating databases, the creation status,
  the site user's password).

Its errors come in several forms, all translated here: HTTP 200 with the
view's own status key at 0 and ``error_message`` (``error_mssage`` in the SSH
key views); HTTP 200 with *no* status key when the security middleware refuses
a value (it rejects `` ` $ & ( ) [ ] { } ; : ' < > | `` in most ``/api/`` fields,
the admin password included); an HTML page with HTTP 500 when a view crashes.
Website creation answers at once; its outcome is read by polling ``statusFunc``
against the policy's time limit. Messages never contain the password.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from forge_ci.errors import SecretError, UsageError
from forge_ci.provision.errors import (
    ProviderApiError,
    ProviderAuthError,
    ProviderUnavailable,
    ProvisionTimeout,
)
from forge_ci.provision.retrying import RetryPolicy

Json = dict[str, Any]

# What CyberPanel's security middleware (CyberCP/secMiddleware.py) refuses in a value.
FORBIDDEN = ("- -", "\n", ";", "&&", "|", "...", "`", "$", "(", ")", "'", "[", "]", "{", "}",
             ":", "<", ">", "&")
# ChangeLinuxUserPassword builds `echo 'user:password' | chpasswd`: these break it silently.
_LINUX_PASSWORD_BREAKERS = ("'", "\n", "\\")
_RETRY_STATUS = frozenset({502, 503, 504})
_AUTH_MESSAGES = ("could not authorize access to api", "invalid login information",
                  "administrator matching query does not exist", "only administrator")
MAX_DB_NAME = 32  # mysqlUtilities.submitDBCreation refuses longer names and users


@dataclass(frozen=True)
class Website:
    domain: str
    owner: str
    package: str
    state: str
    php: str
    email: str = ""  # the owner e-mail given at creation (forge tags its own sites there)


@dataclass(frozen=True)
class Database:
    name: str
    user: str


@dataclass(frozen=True)
class ChildDomain:
    domain: str
    path: str  # absolute: /home/<master>/<path given at creation>


@dataclass(frozen=True)
class Created:
    """What ``createWebsite`` answered: the status file to poll and the site's Linux user."""

    status_file: str
    linux_user: str


class CyberPanelApi:
    """A CyberPanel server at ``endpoint`` (``https://host:8090``), as its admin user."""

    def __init__(self, endpoint: str, admin_user: str, admin_password: str, policy: RetryPolicy, *,
                 verify: bool | str = True, timeout: float = 30.0,
                 session: requests.Session | None = None,
                 log: Callable[[str], None] = lambda _msg: None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.admin_user = admin_user
        self._password = admin_password
        self.policy = policy
        self.verify = verify
        self.timeout = timeout
        self.session = session or requests.Session()
        self.log = log

    # -- the calls forge makes -------------------------------------------------

    def verify_connection(self) -> None:
        """Check the admin user and password with both APIs (changes nothing)."""
        self._api("verifyConn", {}, key="verifyConn", what="checking the admin login")
        self._cloud("verifyLogin", {}, key="status", what="checking the cloudAPI login")

    def list_websites(self) -> list[Website]:
        """Every website on the server (cloudAPI ``fetchWebsites``, 10 a page)."""
        sites: list[Website] = []
        page = 1
        while True:
            body = self._cloud("fetchWebsites", {"page": page}, key="listWebSiteStatus",
                               what="listing websites")
            rows = _json_list(body.get("data"), "fetchWebsites")
            sites += [Website(domain=str(r["domain"]), owner=str(r.get("admin", "")),
                              package=str(r.get("package", "")), state=str(r.get("state", "")),
                              php=str(r.get("phpVersion", "")),
                              email=str(r.get("adminEmail", ""))) for r in rows]
            pages = body.get("pagination")
            if not rows or not isinstance(pages, list) or page >= len(pages):
                return sites
            page += 1

    def website(self, domain: str) -> Website | None:
        return next((w for w in self.list_websites() if w.domain == domain), None)

    def ensure_website(self, *, domain: str, package: str, owner_email: str,
                       website_owner: str, owner_password: str,
                       php: str = "PHP 8.2") -> bool:
        """Adopt the website ``domain`` if it exists, else create it; True if created."""
        if self.website(domain) is not None:
            return False
        self.create_website(domain=domain, package=package, owner_email=owner_email,
                            website_owner=website_owner, owner_password=owner_password, php=php)
        return True

    def ensure_database(self, domain: str, name: str, user: str, password: str) -> bool:
        """Adopt database ``name`` of ``domain`` if it exists, else create it; True if created.

        An existing database with another user is refused: forge would not know
        its password.
        """
        found = next((d for d in self.list_databases(domain) if d.name == name), None)
        if found is None:
            self.create_database(domain, name, user, password)
            return True
        if found.user != user:
            raise ProviderApiError(
                f"the database {name} of {domain} exists with the user {found.user}, not {user}",
                code="db_user_mismatch",
                hint="name that user in forge.yml with its password, or choose another database")
        return False

    def create_website(self, *, domain: str, package: str, owner_email: str,
                       website_owner: str, owner_password: str,
                       php: str = "PHP 8.2") -> str:
        """Create a website and wait until CyberPanel says it is done; its Linux user.

        CyberPanel answers success before it knows (a duplicate domain or an
        unknown package fail later, in the status file): the outcome is polled.
        """
        what = f"creating the website {domain}"
        body = self._api("createWebsite", {
            "domainName": domain, "packageName": package, "ownerEmail": owner_email,
            "websiteOwner": website_owner, "ownerPassword": owner_password,
            "phpSelection": php}, key="createWebSiteStatus", what=what,
            secrets=(owner_password,))
        created = Created(status_file=str(body.get("tempStatusPath", "")),
                          linux_user=str(body.get("LinuxUser", "")))
        if not created.status_file:
            raise ProviderApiError(f"CyberPanel accepted {what} but named no status file",
                                   code="createWebsite")
        self.wait(created.status_file, what, package=package)
        return created.linux_user

    def wait(self, status_file: str, what: str, *, package: str = "") -> None:
        """Poll ``statusFunc`` until the job behind ``status_file`` succeeded or failed."""
        deadline = self.policy.deadline(self.policy.action_timeout)
        while True:
            body = self._cloud("statusFunc", {"statusFile": status_file}, key=None, what=what)
            line = str(body.get("currentStatus") or body.get("error_message") or
                       body.get("errorMessage") or "")
            if body.get("abort") in (1, "1") and body.get("status") in (1, "1"):
                return
            if body.get("abort") in (1, "1") or body.get("status") in (0, "0"):
                raise _job_failed(what, line, package)
            if deadline.passed:
                raise ProvisionTimeout(
                    f"{what}: CyberPanel still working after {self.policy.action_timeout:.0f}s "
                    f"(last status: {line.strip() or 'none'})",
                    hint="look at the website in CyberPanel; running provision again adopts it "
                         "once it exists")
            deadline.wait()

    def list_child_domains(self, master: str) -> list[ChildDomain]:
        body = self._cloud("fetchDomains", {"masterDomain": master}, key="fetchStatus",
                           what=f"listing the child domains of {master}")
        return [ChildDomain(domain=str(r["childDomain"]), path=str(r.get("path", "")))
                for r in _json_list(body.get("data"), "fetchDomains")]

    def ensure_child_domain(self, *, master: str, domain: str, path: str,
                            php: str = "PHP 8.2") -> tuple[ChildDomain, bool]:
        """Adopt or create the child domain ``domain`` of website ``master``; ``(it, created)``.

        ``path`` is relative to ``/home/<master>/`` and becomes the child's document
        root, fixed at creation (no API changes it later): an existing child with
        another path is refused rather than silently served from the wrong place.
        """
        if ".." in path.split("/"):
            raise UsageError(f"the path {path!r} for {domain} climbs out of /home/{master}",
                             hint="give a path inside the website's home, without ..")
        want = f"/home/{master}/{path.strip('/')}"
        found = next((c for c in self.list_child_domains(master) if c.domain == domain), None)
        if found is not None:
            if found.path.rstrip("/") != want:
                raise ProviderApiError(
                    f"the child domain {domain} of {master} serves {found.path}, not {want}",
                    code="docroot_mismatch",
                    hint="CyberPanel cannot move a document root through its API: delete the "
                         "child domain in CyberPanel (its files stay) and run provision again")
            return found, False
        what = f"creating the child domain {domain} of {master}"
        body = self._cloud("submitDomainCreation", {
            "masterDomain": master, "domainName": domain, "phpSelection": php,
            "path": path.strip("/"), "openBasedir": 1}, key="createWebSiteStatus", what=what)
        self.wait(str(body.get("tempStatusPath", "")), what)
        return ChildDomain(domain=domain, path=want), True

    def delete_website(self, domain: str) -> None:
        self._api("deleteWebsite", {"domainName": domain}, key="websiteDeleteStatus",
                  what=f"deleting the website {domain}")

    def list_databases(self, domain: str) -> list[Database]:
        body = self._cloud("fetchDatabases", {"databaseWebsite": domain}, key="fetchStatus",
                           what=f"listing the databases of {domain}")
        return [Database(name=str(r["dbName"]), user=str(r["dbUser"]))
                for r in _json_list(body.get("data"), "fetchDatabases")]

    def create_database(self, domain: str, name: str, user: str, password: str) -> None:
        """Create database ``name`` and its user, both verbatim (no prefix added)."""
        for label, value in (("database name", name), ("database user", user)):
            if len(value) > MAX_DB_NAME:
                raise UsageError(
                    f"the {label} {value!r} is {len(value)} characters; CyberPanel takes at "
                    f"most {MAX_DB_NAME}", hint=f"choose a {label} of 32 characters or fewer")
        self._cloud("submitDBCreation", {
            "databaseWebsite": domain, "dbName": name, "dbUsername": user,
            "dbPassword": password, "webUserName": ""}, key="createDBStatus",
            what=f"creating the database {name} for {domain}", secrets=(password,))

    def set_linux_password(self, domain: str, password: str) -> str:
        """Set the password of the website's Linux user; that user's name.

        The only way the API reaches the site user (SSH keys sent through the API
        go to root). CyberPanel runs the change through a shell line and reports
        success even when a ``'`` or ``\\`` broke it, so such passwords are refused here.
        """
        if any(c in password for c in _LINUX_PASSWORD_BREAKERS):
            raise UsageError("a password for CyberPanel's site user must not contain ', \\ "
                             "or a newline: CyberPanel would report success and not set it",
                             hint="use letters, digits and - _ . only")
        body = self._cloud("ChangeLinuxUserPassword", {"domain": domain, "password": password},
                           key="status", what=f"setting the site user's password of {domain}",
                           secrets=(password,))
        return str(body.get("LinuxUser", ""))

    def add_root_key(self, public_key: str) -> None:
        """Add ``public_key`` to **root's** authorized_keys (cloudAPI ``addSSHKey``)."""
        self._cloud("addSSHKey", {"key": public_key}, key="add_status",
                    what="adding an SSH key for root")

    # -- the door --------------------------------------------------------------

    def _api(self, view: str, body: Json, *, key: str, what: str,
             secrets: tuple[str, ...] = ()) -> Json:
        payload = {"adminUser": self.admin_user, "adminPass": self._password, **body}
        answer = self._post(f"/api/{view}", payload, what)
        if key not in answer and _refused_by_middleware(answer):
            raise self._middleware_error(payload, view, what)
        return self._check(answer, key, view, what, secrets)

    def _cloud(self, controller: str, body: Json, *, key: str | None, what: str,
               secrets: tuple[str, ...] = ()) -> Json:
        payload = {"serverUserName": self.admin_user, "controller": controller, **body}
        answer = self._post("/cloudAPI/", payload, what)
        if key is None:
            return answer
        return self._check(answer, key, controller, what, secrets)

    def _token(self) -> str:
        digest = hashlib.sha256(f"{self.admin_user}:{self._password}".encode()).hexdigest()
        return f"Basic {digest}"

    def _post(self, path: str, payload: Json, what: str) -> Json:
        url = self.endpoint + path
        attempt = 0
        while True:
            try:
                response = self.session.post(url, data=json.dumps(payload), timeout=self.timeout,
                                             verify=self.verify,
                                             headers={"Authorization": self._token(),
                                                      "Content-Type": "application/json"})
            except (requests.ConnectionError, requests.Timeout) as e:
                if attempt >= self.policy.api_retries:
                    raise ProviderUnavailable(
                        f"cannot reach CyberPanel at {self.endpoint} while {what} "
                        f"({e.__class__.__name__})",
                        hint="check the panel URL (port 8090 by default) and that lscpd runs",
                    ) from None
                reason = e.__class__.__name__
            except requests.RequestException as e:
                raise ProviderUnavailable(
                    f"the request to CyberPanel at {self.endpoint} failed while {what} "
                    f"({e.__class__.__name__})", hint="check the panel URL") from None
            else:
                if response.status_code not in _RETRY_STATUS or \
                        attempt >= self.policy.api_retries:
                    return self._parse(response, path, what)
                reason = f"HTTP {response.status_code}"
            delay = self.policy.backoff(attempt)
            self.log(f"{what}: {reason}; retrying in {delay:.0f}s")
            self.policy.sleep(delay)
            attempt += 1

    def _parse(self, response: requests.Response, path: str, what: str) -> Json:
        status = response.status_code
        if status in (401, 403):
            raise ProviderAuthError(f"CyberPanel refused forge (HTTP {status}) while {what}",
                                    hint="check the admin user and password forge was given")
        if status == 500:
            raise ProviderApiError(
                f"CyberPanel crashed (HTTP 500, an error page) on {path} while {what}",
                code="http_500",
                hint="CyberPanel does this when the admin user does not exist or a field is "
                     "missing: check the admin user name; its log is "
                     "/home/cyberpanel/error-logs.txt")
        if status != 200:
            raise ProviderUnavailable(f"CyberPanel answered HTTP {status} on {path} while {what}",
                                      hint="run again later; check the panel URL")
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise ProviderApiError(
                f"CyberPanel's answer on {path} while {what} is not a JSON object",
                code="bad_answer", hint="check the panel URL points at CyberPanel (port 8090)")
        return answer

    def _check(self, answer: Json, key: str, name: str, what: str,
               secrets: tuple[str, ...]) -> Json:
        if answer.get(key) in (1, "1", True):
            return answer
        message = self._scrub(_message(answer), secrets)
        lowered = message.lower()
        if key == "verifyConn" and not message:
            message, lowered = "wrong password", "could not authorize access to api"
        if "api access disabled" in lowered:
            raise ProviderAuthError(
                f"CyberPanel's API is disabled for {self.admin_user!r} ({what})",
                hint="in CyberPanel, Users > API Access: enable it for this user")
        if any(m in lowered for m in _AUTH_MESSAGES):
            raise ProviderAuthError(
                f"CyberPanel refused the admin login {self.admin_user!r} while {what}: {message}",
                hint="check the admin user and its password (the panel's own admin account)")
        if key not in answer and _refused_by_middleware(answer):
            raise ProviderApiError(f"CyberPanel's input filter refused {what}: {message}",
                                   code="refused")
        raise ProviderApiError(f"CyberPanel refused {what}: {message or 'no reason given'}",
                               code=name)

    def _middleware_error(self, payload: Json, view: str, what: str) -> Exception:
        bad = sorted(k for k, v in payload.items()
                     if isinstance(v, str) and any(p in v for p in FORBIDDEN))
        chars = "` $ & ( ) [ ] { } ; : ' < > |"
        if "adminPass" in bad:
            return SecretError(
                f"CyberPanel's security filter refused {what}: the admin password contains "
                f"a character it rejects ({chars}); /api/verifyConn is exempt, so the login "
                f"check passed", hint="change the CyberPanel admin password to one without "
                "these characters (long letters and digits are fine), and update the secret")
        fields = ", ".join(f for f in bad if f != "adminPass") or "a field"
        return UsageError(f"CyberPanel's security filter refused {what}: {fields} contains a "
                          f"character it rejects ({chars})",
                          hint=f"remove those characters from {fields} in forge.yml")

    def _scrub(self, text: str, secrets: tuple[str, ...]) -> str:
        for secret in (self._password, self._token(), *secrets):
            if secret:
                text = text.replace(secret, "***")
        return text


def _message(answer: Json) -> str:
    for key in ("error_message", "error_mssage", "errorMessage", "currentStatus"):
        value = answer.get(key)
        if value not in (None, "", "None"):
            return str(value)
    return ""


def _refused_by_middleware(answer: Json) -> bool:
    return _message(answer).startswith("Data supplied is not accepted")


def _json_list(data: Any, name: str) -> list[Json]:
    """CyberPanel's lists arrive as a JSON *string* inside the JSON answer."""
    try:
        rows = json.loads(data) if isinstance(data, str) else data
    except ValueError:
        rows = None
    if not isinstance(rows, list):
        raise ProviderApiError(f"CyberPanel's {name} answer holds no list", code="bad_answer")
    return [r for r in rows if isinstance(r, dict)]


def _job_failed(what: str, line: str, package: str) -> ProviderApiError:
    reason = line.replace("[404]", "").strip() or "no reason given"
    hint = None
    if "already exists" in reason:
        hint = ("another website (or child domain) has this domain: adopt it by running "
                "provision again, or choose another domain")
    elif "Package matching query" in reason:
        hint = f"the package {package!r} does not exist: name one from CyberPanel's Packages"
    elif "Invalid status file" in reason:
        hint = "CyberPanel did not recognise its own status file: look at the panel's log"
    return ProviderApiError(f"{what} failed in CyberPanel: {reason}", code="job_failed",
                            hint=hint)
