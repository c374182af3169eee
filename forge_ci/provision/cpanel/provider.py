"""A cPanel account (LibyanSpider and most shared hosts) as a
:class:`~forge_ci.provision.base.Provider`.

Through :class:`~forge_ci.provision.cpanel.api.CpanelApi`, with the account's
API token, forge:

1. checks the account has shell access (UAPI ``SSH::get_shell``): deploys go
   over SSH, and only the host can grant it (in WHM);
2. imports the deploy key and authorizes it (API 2 ``SSH::importkey`` and
   ``SSH::authkey``), unless an authorized key with the same material is there;
3. makes ``<path>/current`` a link to an empty release over SSH, then creates
   the domain (a subdomain of one of the account's domains, else an addon
   domain) with its document root at ``<path>/current/web``. cPanel makes the
   document root like ``mkdir -p``: without the link first, ``current`` would be
   a directory and forge could not switch releases. The domain is read back
   (``single_domain_data``): a host that restricts document roots to
   public_html moves it there and still reports success, which forge refuses;
4. creates the database and its user with the account's prefix
   (``Mysql::get_restrictions``: UAPI never adds it) and grants the user all
   privileges; the password comes from FORGE_DB_PASSWORD.

cPanel has no labels: forge never deletes anything of a cPanel account
(``destroy`` plans nothing and says so).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from forge_ci.config.provision import ProvisionConfig
from forge_ci.provision.base import Change, Plan, Provider, Provisioned, ServerSpec
from forge_ci.provision.cpanel.api import CpanelApi, DbRestrictions, DomainData, ShellAccess, SshKey
from forge_ci.provision.errors import ProviderApiError
from forge_ci.provision.panel import Account, PanelSite, need
from forge_ci.provision.policy import ProvisionPolicy

URL_VAR, USER_VAR, TOKEN_VAR = "CPANEL_URL", "CPANEL_USER", "CPANEL_TOKEN"
DB_PASSWORD_VAR = "FORGE_DB_PASSWORD"  # noqa: S105 (a variable name)


def key_body(line: str) -> str:
    """The type and base64 of an OpenSSH public key line (its comment left out)."""
    return " ".join(line.split()[:2])


@dataclass(frozen=True)
class Facts:
    shell: ShellAccess
    keys: tuple[SshKey, ...]
    domain: DomainData | None
    restrictions: DbRestrictions
    databases: Mapping[str, tuple[str, ...]]


class CpanelProvider(Provider[Facts]):
    name = "cpanel"
    boots_from_user_data = False

    def __init__(self, api: CpanelApi, site: PanelSite, config: ProvisionConfig,
                 account: Account, db_password: str,
                 log: Callable[[str], None] = lambda _m: None) -> None:
        self.api, self.site, self.config, self.account = api, site, config, account
        self.home = f"/home/{api.user}"
        self.rel_docroot = site.under(self.home)
        self.db_password, self.log = db_password, log
        self.key_name = f"forge-{site.name}"

    @classmethod
    def from_env(cls, config: ProvisionConfig, environ: Mapping[str, str],
                 policy: ProvisionPolicy, log: Callable[[str], None], *, site: PanelSite,
                 account: Account) -> CpanelProvider:
        url = need(environ, URL_VAR, "the account's cPanel address, e.g. https://host:2083")
        user = need(environ, USER_VAR, "the cPanel account's user name")
        token = need(environ, TOKEN_VAR,
                     "create an API token in cPanel > Security > Manage API Tokens")
        db_password = need(environ, DB_PASSWORD_VAR,
                           "the site database's password (also DB_PASSWORD in dotenv)")
        api = CpanelApi(url, user, token, policy, verify=config.panel.ca_file or True, log=log)
        return cls(api, site, config, account, db_password, log)

    def names(self, restrictions: DbRestrictions) -> tuple[str, str]:
        """The database and user names with the account's prefix, within its limits."""
        base = self.site.database
        prefix = restrictions.prefix
        db = base if base.startswith(prefix) else prefix + base
        user = (prefix + base[len(prefix):] if base.startswith(prefix) else prefix + base)
        return db[: restrictions.max_database_name_length], user[: restrictions.max_username_length]

    # -- observe / plan / apply -----------------------------------------------

    def observe(self, spec: ServerSpec) -> Facts:
        shell = self.api.shell()
        keys = tuple(self.api.list_public_keys())
        domain = (self.api.domain_data(self.site.domain)
                  if self.site.domain in self.api.list_domains() else None)
        return Facts(shell, keys, domain, self.api.db_restrictions(), self.api.list_databases())

    def plan(self, spec: ServerSpec, observed: Facts) -> Plan:
        if not observed.shell.has_terminal_access:
            raise ProviderApiError(
                f"the cPanel account {self.api.user} has no shell access "
                f"(shell {observed.shell.shell or 'none'})", code="no_shell",
                hint="forge deploys over SSH: ask the host to enable SSH (jailed shell is "
                     "fine) for the account in WHM; an account cannot grant it itself")
        changes: list[Change] = []
        notes = [f"the account's shell is jailed ({observed.shell.shell}): deploys check for "
                 "flock, GNU tar and hard links"] if observed.shell.jailed else []
        body = key_body(spec.ssh_public_key)
        if not any(k.authorized and key_body(k.key) == body for k in observed.keys):
            changes.append(Change("attach", "ssh_key", self.key_name, {"account": self.api.user}))
        want = f"{self.home}/{self.rel_docroot}"
        if observed.domain is None:
            changes.append(Change("create", "domain", self.site.domain, {"docroot": want}))
        else:
            self.api.check_docroot(observed.domain, self.rel_docroot)
        db, user = self.names(observed.restrictions)
        users = observed.databases.get(db)
        if users is None:
            changes.append(Change("create", "database", db, {"user": user}))
        elif user not in users:
            changes.append(Change("attach", "database_user", user, {"database": db}))
        existing = self.site.info(self.site.domain, self.api.user) if observed.domain else None
        return Plan(self.name, self.site.name, tuple(changes), existing=existing,
                    notes=tuple(notes))

    def apply(self, spec: ServerSpec, plan: Plan) -> Provisioned:
        for change in plan.changes:
            self.log(change.line())
            if change.kind == "ssh_key":
                self.api.import_key(self.key_name, spec.ssh_public_key)
                self.api.authorize_key(self.key_name)
            elif change.kind == "domain":
                self.account.link_current(self.api.user, self.site.path)
                self.api.create_domain(self.site.domain, self.rel_docroot)
            elif change.kind == "database":
                self.api.create_database(change.name)
                self.api.create_db_user(str(change.detail["user"]), self.db_password)
                self.api.grant_all(str(change.detail["user"]), change.name)
            elif change.kind == "database_user":
                self.api.create_db_user(change.name, self.db_password)
                self.api.grant_all(change.name, str(change.detail["database"]))
        return Provisioned(self.site.info(self.site.domain, self.api.user), booted_from_spec=False)

    def plan_destroy(self, name: str, ownership: Mapping[str, str]) -> Plan:
        return Plan(self.name, name, (), notes=(
            "cPanel keeps no labels, so forge cannot prove what it made there: it deletes "
            "nothing; remove the domain, database and key in cPanel",))

    def destroy(self, plan: Plan) -> None:  # pragma: no cover - plan_destroy plans nothing
        return None
