"""CyberPanel as a :class:`~forge_ci.provision.base.Provider`: a site on a panel someone runs.

What forge makes, through :class:`~forge_ci.provision.cyberpanel.api.CyberPanelApi`:

1. the *website* ``panel.website`` (adopted when it exists); its Linux user is
   the deploy user and ``/home/<website>`` its home. forge tags a website it
   creates through the owner e-mail (``<local>+forge-<project>-<environment>@...``):
   CyberPanel has no labels, and that tag is what ``destroy`` checks;
2. the *child domain* ``panel.domain`` with its path at ``<path>/current/web``:
   neither CyberPanel API changes a document root, and a child domain's path is
   fixed at creation, so this is the one API route to a document root forge
   chooses (``<path>`` must lie under ``/home/<website>``);
3. the *database* (``provision.database``, at most 32 characters) and its user
   (the same name), with the password from FORGE_DB_PASSWORD;
4. the deploy key for the website's Linux user: CyberPanel's API only adds keys
   for root, so forge sets a one-time random password (cloudAPI
   ``ChangeLinuxUserPassword``), logs in with it over SSH (host key pinned by
   FORGE_KNOWN_HOSTS), appends the key, and sets another random password it
   forgets, so the first one is dead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from forge_ci.config.provision import ProvisionConfig
from forge_ci.errors import ConfigError
from forge_ci.provision.base import Change, Plan, Provider, Provisioned, ServerSpec
from forge_ci.provision.cyberpanel.api import ChildDomain, CyberPanelApi, Database, Website
from forge_ci.provision.errors import NotManagedError, ProviderApiError
from forge_ci.provision.panel import Account, PanelSite, need, one_time_password
from forge_ci.provision.policy import ProvisionPolicy

URL_VAR, USER_VAR, PASSWORD_VAR = "CYBERPANEL_URL", "CYBERPANEL_USER", "CYBERPANEL_PASSWORD"
DB_PASSWORD_VAR = "FORGE_DB_PASSWORD"  # noqa: S105 (a variable name)


def owner_tag(email: str, project: str, environment: str) -> str:
    """``email`` with forge's mark in its local part (plus addressing)."""
    local, _, domain = email.partition("@")
    return f"{local.split('+')[0]}+forge-{project}-{environment}@{domain}"


def tagged(email: str, project: str, environment: str) -> bool:
    local = email.partition("@")[0]
    return local.endswith(f"+forge-{project}-{environment}")


@dataclass(frozen=True)
class Facts:
    website: Website | None
    child: ChildDomain | None
    databases: tuple[Database, ...]
    key_logs_in: bool | None  # None: not checked (no deploy user known yet)


class CyberPanelProvider(Provider[Facts]):
    name = "cyberpanel"
    boots_from_user_data = False

    def __init__(self, api: CyberPanelApi, site: PanelSite, config: ProvisionConfig,
                 account: Account, deploy_user: str | None, db_password: str,
                 log: Callable[[str], None] = lambda _m: None) -> None:
        if not config.panel.website:
            raise ConfigError("provider: cyberpanel needs provision.panel.website",
                              key="provision.panel.website",
                              hint="the CyberPanel website that holds the site as a child "
                                   "domain (its document root cannot be moved by the API)")
        if config.panel.website == site.domain:
            raise ConfigError("provision.panel.website and the site's domain are the same",
                              key="provision.panel.website",
                              hint="a website's document root is fixed at public_html; forge "
                                   "serves the site from a child domain of another website")
        self.api, self.site, self.config, self.account = api, site, config, account
        self.website = config.panel.website
        self.home = f"/home/{self.website}"
        self.rel_docroot = site.under(self.home)
        self.deploy_user, self.db_password, self.log = deploy_user, db_password, log
        self.email = owner_tag(config.panel.owner_email, site.project, site.environment)

    @classmethod
    def from_env(cls, config: ProvisionConfig, environ: Mapping[str, str],
                 policy: ProvisionPolicy, log: Callable[[str], None], *, site: PanelSite,
                 account: Account, deploy_user: str | None) -> CyberPanelProvider:
        url = need(environ, URL_VAR, "the panel's address, e.g. https://panel.example.com:8090")
        user = need(environ, USER_VAR, "CyberPanel's admin user (cloudAPI only lets 'admin' in)")
        password = need(environ, PASSWORD_VAR, "the admin user's password, as a secret")
        db_password = need(environ, DB_PASSWORD_VAR,
                           "the site database's password (also DB_PASSWORD in dotenv)")
        api = CyberPanelApi(url, user, password, policy, verify=config.panel.ca_file or True,
                            log=log)
        return cls(api, site, config, account, deploy_user, db_password, log)

    # -- observe / plan / apply -----------------------------------------------

    def observe(self, spec: ServerSpec) -> Facts:
        website = self.api.website(self.website)
        if website is None:
            return Facts(None, None, (), None)
        child = next((c for c in self.api.list_child_domains(self.website)
                      if c.domain == self.site.domain), None)
        dbs = tuple(self.api.list_databases(self.website))
        key = self.account.key_logs_in(self.deploy_user) if self.deploy_user else None
        return Facts(website, child, dbs, key)

    def plan(self, spec: ServerSpec, observed: Facts) -> Plan:
        s, changes, notes = self.site, [], []
        if observed.website is None:
            changes.append(Change("create", "website", self.website,
                                  {"package": self.config.panel.package, "owner": self.email}))
        want = f"{self.home}/{self.rel_docroot}"
        if observed.child is None:
            changes.append(Change("create", "child_domain", s.domain, {"docroot": want}))
        elif observed.child.path.rstrip("/") != want:
            raise ProviderApiError(
                f"the child domain {s.domain} of {self.website} serves {observed.child.path}, "
                f"not {want}", code="docroot_mismatch",
                hint="CyberPanel cannot move a document root through its API: delete the child "
                     "domain in CyberPanel (its files stay) and run provision again")
        db = next((d for d in observed.databases if d.name == s.database), None)
        if db is None:
            changes.append(Change("create", "database", s.database, {"user": s.database}))
        elif db.user != s.database:
            raise ProviderApiError(f"the database {s.database} exists with the user {db.user}",
                                   code="db_user_mismatch",
                                   hint="set provision.database to another name")
        if not observed.key_logs_in:
            changes.append(Change("attach", "ssh_key", self.deploy_user or "(the site's user)",
                                  {"via": "one-time password"}))
        if observed.website is not None and not tagged(observed.website.email, s.project,
                                                       s.environment):
            notes.append(f"website {self.website} was not made by forge: adopted, never "
                         "destroyed")
        existing = (s.info(self.website, self.deploy_user or "?")
                    if observed.website is not None else None)
        return Plan(self.name, s.name, tuple(changes), existing=existing, notes=tuple(notes))

    def apply(self, spec: ServerSpec, plan: Plan) -> Provisioned:
        user = self.deploy_user
        for change in plan.changes:
            self.log(change.line())
            if change.kind == "website":
                user = self.api.create_website(
                    domain=self.website, package=self.config.panel.package,
                    owner_email=self.email, website_owner=self.api.admin_user,
                    owner_password=one_time_password(), php=self.config.panel.php) or user
            elif change.kind == "child_domain":
                self.api.ensure_child_domain(master=self.website, domain=self.site.domain,
                                             path=self.rel_docroot, php=self.config.panel.php)
            elif change.kind == "database":
                self.api.ensure_database(self.website, self.site.database, self.site.database,
                                         self.db_password)
            elif change.kind == "ssh_key":
                user = self._install_key()
        notes: list[str] = []
        if user and user != self.deploy_user:
            notes.append(f"the site's Linux user is {user}: set it as the environment's hosts "
                         f"user (and provision.deploy_user) so deploys log in as it")
        return Provisioned(self.site.info(self.website, user or "?"), booted_from_spec=False,
                           notes=tuple(notes))

    def _install_key(self) -> str:
        once = one_time_password()
        user = self.api.set_linux_password(self.website, once)
        if self.deploy_user and user and user != self.deploy_user:
            raise ProviderApiError(
                f"the Linux user of {self.website} is {user}, not {self.deploy_user}",
                code="user_mismatch", hint=f"set the environment's hosts user to {user}")
        self.account.install_key(user, once)
        self.api.set_linux_password(self.website, one_time_password())  # the first one dies
        return user

    # -- destroy ----------------------------------------------------------------

    def plan_destroy(self, name: str, ownership: Mapping[str, str]) -> Plan:
        site = self.api.website(self.website)
        if site is None:
            return Plan(self.name, name, ())
        if not tagged(site.email, self.site.project, self.site.environment):
            raise NotManagedError(
                f"website {self.website} was not made by forge for {self.site.project} "
                f"{self.site.environment} (owner e-mail {site.email or 'unknown'})",
                hint="forge only deletes websites it created; delete it in CyberPanel")
        return Plan(self.name, name, (Change("delete", "website", self.website,
                                             {"with": "its child domains and databases"}),),
                    existing=self.site.info(self.website, self.deploy_user or "?"))

    def destroy(self, plan: Plan) -> None:
        for change in plan.changes:
            if change.kind == "website":
                self.api.delete_website(change.name)
