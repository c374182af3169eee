"""The cyberpanel and cpanel providers against the lab's panel fakes: what a first
run creates (in order), that a second run makes no create call (the fakes' call
logs), --plan through the CLI, and destroy's guard.

The SSH part (a key login check, installing the key with a one-time password,
linking ``current``) goes through the provider's ``Account``; here a recording
account stands in for it and checks what the panel did first."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from lab import leaks
from lab.cpanel import CpanelFake
from lab.cyberpanel import CyberPanelFake

from forge_ci.cli import main
from forge_ci.config.provision import ProvisionConfig
from forge_ci.provision.base import ServerSpec
from forge_ci.provision.cpanel import CpanelApi
from forge_ci.provision.cpanel.provider import CpanelProvider
from forge_ci.provision.cyberpanel import CyberPanelApi
from forge_ci.provision.cyberpanel.provider import CyberPanelProvider
from forge_ci.provision.errors import NotManagedError
from forge_ci.provision.panel import PanelSite, link_current_script
from forge_ci.provision.policy import ProvisionPolicy as Policy

FAST = Policy(poll_interval=0.0, action_timeout=30.0, api_retries=1, api_backoff=0.0)
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIForgeLabDeployKeyForTests forge-deploy"
CREATES = {"createWebsite", "submitDomainCreation", "submitDBCreation",
           "SubDomain::addsubdomain", "AddonDomain::addaddondomain", "Mysql::create_database",
           "Mysql::create_user", "SSH::importkey"}


@dataclass
class RecordingAccount:
    """Stands in for SSH as the site's user; records what it was asked."""

    panel: object = None
    installed: set[str] = field(default_factory=set)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def key_logs_in(self, user: str) -> bool:
        self.calls.append(("key_logs_in", user))
        return user in self.installed

    def install_key(self, user: str, password: str) -> None:
        assert isinstance(self.panel, CyberPanelFake)
        # The password it got is the one CyberPanel set for that user just before.
        assert self.panel.linux_passwords[user] == password
        self.calls.append(("install_key", user))
        self.installed.add(user)

    def link_current(self, user: str, path: str) -> None:
        assert isinstance(self.panel, CpanelFake)
        # Before the domain exists: cPanel's mkdir -p would make `current` a directory.
        assert not any(d.startswith(path + "/current") for d in self.panel.dirs)
        self.calls.append(("link_current", path))


def spec() -> ServerSpec:
    return ServerSpec(name="example-site-production", labels={}, ownership={},
                      ssh_public_key=KEY, ssh_port=22, ssh_sources=())


def password() -> str:
    value = secrets.token_hex(12)
    leaks.register(value)
    return value


def _panel_environ(monkeypatch: pytest.MonkeyPatch, prefix: str, **panel: str) -> None:
    """The process environment a provision run through the CLI sees: no GITHUB_*,
    FORGE_* or PREFIX* variable of this machine's, then the panel's (PREFIX + each
    name), a database password and an SSH key."""
    from lab.sshd import generate_ed25519

    for name in list(os.environ):
        if name.startswith(("GITHUB_", prefix, "FORGE_")):
            monkeypatch.delenv(name)
    for name, value in panel.items():
        monkeypatch.setenv(prefix + name, value)
    monkeypatch.setenv("FORGE_DB_PASSWORD", password())
    monkeypatch.setenv("FORGE_SSH_KEY", generate_ed25519().private)


# -- CyberPanel ----------------------------------------------------------------

WEBSITE, DOMAIN = "sites.example.org", "shop.example.org"


@pytest.fixture
def cyber() -> Iterator[CyberPanelFake]:
    with CyberPanelFake() as server:
        yield server


def cyber_provider(fake: CyberPanelFake, account: RecordingAccount, *,
                   user: str | None = None) -> CyberPanelProvider:
    config = ProvisionConfig.model_validate({"provider": "cyberpanel", "panel": {
        "website": WEBSITE, "domain": DOMAIN, "owner_email": "ops@example.org"}})
    site = PanelSite("example-site", "production", "example-site-production", DOMAIN,
                     f"/home/{WEBSITE}/{DOMAIN}", "shop_production", "127.0.0.1", 22)
    api = CyberPanelApi(fake.url, "admin", fake.admin_password, FAST)
    return CyberPanelProvider(api, site, config, account, user, password())


def test_cyberpanel_first_run_creates_website_child_database_and_key(
        cyber: CyberPanelFake) -> None:
    account = RecordingAccount(cyber)
    provider = cyber_provider(cyber, account)
    plan = provider.reconcile_plan(spec())
    assert [(c.action, c.kind, c.name) for c in plan.changes] == [
        ("create", "website", WEBSITE), ("create", "child_domain", DOMAIN),
        ("create", "database", "shop_production"), ("attach", "ssh_key", "(the site's user)")]
    made = provider.apply(spec(), plan)
    user = cyber.websites[WEBSITE]["externalApp"]
    assert cyber.child_domains[DOMAIN]["path"] == f"/home/{WEBSITE}/{DOMAIN}/current/web"
    assert cyber.databases["shop_production"]["dbUser"] == "shop_production"
    assert ("install_key", user) in account.calls
    # The one-time password was replaced after use.
    assert cyber.count("ChangeLinuxUserPassword") == 2
    assert any(user in n for n in made.notes)  # tells which user to deploy as
    assert made.server.ipv4 == "127.0.0.1"
    assert "+forge-example-site-production@" in cyber.websites[WEBSITE]["adminEmail"]


def test_cyberpanel_second_run_makes_no_create_call(cyber: CyberPanelFake) -> None:
    account = RecordingAccount(cyber)
    first = cyber_provider(cyber, account)
    first.apply(spec(), first.reconcile_plan(spec()))
    user = cyber.websites[WEBSITE]["externalApp"]
    before = len(cyber.calls)
    again = cyber_provider(cyber, account, user=user)
    plan = again.reconcile_plan(spec())
    assert plan.empty, plan.lines()
    again.apply(spec(), plan)
    assert not CREATES & {c.name for c in cyber.calls[before:]}
    assert "ChangeLinuxUserPassword" not in {c.name for c in cyber.calls[before:]}


def test_cyberpanel_adopts_a_website_it_did_not_make_but_never_destroys_it(
        cyber: CyberPanelFake) -> None:
    cyber.add_website(WEBSITE)
    provider = cyber_provider(cyber, RecordingAccount(cyber))
    plan = provider.reconcile_plan(spec())
    assert not plan.creates("website")
    assert any("not made by forge" in n for n in plan.notes)
    with pytest.raises(NotManagedError, match="forge only deletes websites it created"):
        provider.plan_destroy("example-site-production", {})


def test_cyberpanel_destroy_deletes_only_the_website_forge_made(cyber: CyberPanelFake) -> None:
    provider = cyber_provider(cyber, RecordingAccount(cyber))
    provider.apply(spec(), provider.reconcile_plan(spec()))
    plan = provider.plan_destroy("example-site-production", {})
    assert [(c.action, c.name) for c in plan.changes] == [("delete", WEBSITE)]
    provider.destroy(plan)
    assert WEBSITE not in cyber.websites


# -- cPanel --------------------------------------------------------------------

CP_DOMAIN = "shop.example.ly"


@pytest.fixture
def cpanel() -> Iterator[CpanelFake]:
    with CpanelFake() as server:
        yield server


def cpanel_provider(fake: CpanelFake, account: RecordingAccount,
                    path: str = "public_html/shop") -> CpanelProvider:
    config = ProvisionConfig.model_validate({"provider": "cpanel"})
    site = PanelSite("example-site", "production", "example-site-production", CP_DOMAIN,
                     f"/home/{fake.user}/{path}", "shop_production", "127.0.0.1", 22)
    api = CpanelApi(fake.url, fake.user, fake.token, FAST, verify=str(fake.ca_file))
    return CpanelProvider(api, site, config, account, password())


def test_cpanel_first_run_links_current_before_the_domain_then_database_and_key(
        cpanel: CpanelFake) -> None:
    cpanel.add_subdomain("other.example.ly", "public_html/other")
    account = RecordingAccount(cpanel)
    provider = cpanel_provider(cpanel, account)
    plan = provider.reconcile_plan(spec())
    assert [(c.action, c.kind, c.name) for c in plan.changes] == [
        ("attach", "ssh_key", "forge-example-site-production"),
        ("create", "domain", CP_DOMAIN),
        ("create", "database", "libyan_shop_production")]
    assert any("jailed" in n for n in plan.notes)
    provider.apply(spec(), plan)
    assert account.calls == [("link_current", f"/home/{cpanel.user}/public_html/shop")]
    assert cpanel.domains[CP_DOMAIN]["documentroot"] == \
        f"/home/{cpanel.user}/public_html/shop/current/web"
    assert cpanel.databases["libyan_shop_production"] == {"libyan_shop_production"}
    assert cpanel.keys["forge-example-site-production"]["authorized"]
    names = cpanel.names()
    assert names.index("SSH::importkey") < names.index("SSH::authkey")


def test_cpanel_second_run_makes_no_create_call(cpanel: CpanelFake) -> None:
    provider = cpanel_provider(cpanel, RecordingAccount(cpanel))
    provider.apply(spec(), provider.reconcile_plan(spec()))
    before = len(cpanel.calls)
    plan = provider.reconcile_plan(spec())
    assert plan.empty, plan.lines()
    assert not CREATES & set(cpanel.names()[before:])


def test_cpanel_docroot_moved_under_public_html_fails_clearly(cpanel: CpanelFake) -> None:
    provider = cpanel_provider(cpanel, RecordingAccount(cpanel), path="sites/shop")
    with pytest.raises(Exception, match="moved under public_html"):
        provider.apply(spec(), provider.reconcile_plan(spec()))


def test_cpanel_without_shell_access_refuses_before_any_change() -> None:
    with CpanelFake(shell="/usr/local/cpanel/bin/noshell") as fake:
        provider = cpanel_provider(fake, RecordingAccount(fake))
        with pytest.raises(Exception, match="no shell access") as err:
            provider.reconcile_plan(spec())
        assert "WHM" in str(err.value)
        assert not CREATES & set(fake.names())


def test_cpanel_destroy_deletes_nothing_and_says_so(cpanel: CpanelFake) -> None:
    plan = cpanel_provider(cpanel, RecordingAccount(cpanel)).plan_destroy("x", {})
    assert plan.empty and "deletes nothing" in plan.notes[0]


def test_link_current_script_makes_a_link_and_leaves_an_existing_one(tmp_path: Path) -> None:
    import subprocess

    site = tmp_path / "site"
    subprocess.run(["sh", "-c", link_current_script(str(site))], check=True)
    assert (site / "current").is_symlink()
    assert (site / "current" / "web").is_dir()
    (site / "current").unlink()
    (site / "current").symlink_to("releases/r1")
    subprocess.run(["sh", "-c", link_current_script(str(site))], check=True)
    assert (site / "current").readlink() == Path("releases/r1")


# -- the CLI's --plan ------------------------------------------------------------

def test_provision_plan_for_cpanel_through_the_cli(cpanel: CpanelFake, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "forge.yml").write_text(f"""\
version: 1
project: example-site
environments:
  production:
    url: https://{CP_DOMAIN}
    path: /home/{cpanel.user}/public_html/shop
    hosts: [{{ host: 127.0.0.1, user: {cpanel.user} }}]
provision:
  provider: cpanel
  panel: {{ ca_file: {cpanel.ca_file} }}
  wait: {{ poll_interval: 0, api_backoff: 0, api_retries: 1 }}
""")
    monkeypatch.chdir(tmp_path)
    _panel_environ(monkeypatch, "CPANEL_", URL=cpanel.url, USER=cpanel.user,
                   TOKEN=cpanel.token)
    code = main(["provision", "production", "--plan", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "create domain shop.example.ly" in out or '"domain"' in out
    assert not CREATES & set(cpanel.names())


def test_the_libyanspider_example_plans_its_site_in_a_cpanel_account() -> None:
    """examples/providers/libyanspider.yml, as documented, against the fake account."""
    from forge_ci.config.loader import parse
    from forge_ci.provision.panel import panel_site
    from forge_ci.provision.site import resolve

    text = (Path(__file__).parents[3] / "examples/providers/libyanspider.yml").read_text()
    config = parse(text, {"FORGE_DB_PASSWORD": "x"}).config
    assert config.provision is not None
    site = panel_site(config.provision, resolve(config, "production", "libyanspider.yml"),
                      "https://server1.libyanspider.cloud:2083")
    assert (site.domain, site.docroot) == ("shop.example.ly",
                                           "/home/libyan/public_html/shop/current/web")
    with CpanelFake(user="libyan") as fake:
        api = CpanelApi(fake.url, fake.user, fake.token, FAST, verify=str(fake.ca_file))
        provider = CpanelProvider(api, site, config.provision, RecordingAccount(fake), "x")
        plan = provider.reconcile_plan(spec())
    assert [(c.kind, c.name) for c in plan.changes] == [
        ("ssh_key", "forge-shop-production"), ("domain", "shop.example.ly"),
        ("database", "libyan_shop")]


def _cyber_cli(fake: CyberPanelFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "forge.yml").write_text(f"""\
version: 1
project: example-site
environments:
  production:
    url: https://{DOMAIN}
    path: /home/{WEBSITE}/{DOMAIN}
provision:
  provider: cyberpanel
  database: shop_production
  panel: {{ website: {WEBSITE} }}
  wait: {{ poll_interval: 0, api_backoff: 0, api_retries: 1 }}
""")
    monkeypatch.chdir(tmp_path)
    _panel_environ(monkeypatch, "CYBERPANEL_", URL=fake.url, USER="admin",
                   PASSWORD=fake.admin_password)


def test_provision_plan_for_cyberpanel_through_the_cli(
        cyber: CyberPanelFake, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    _cyber_cli(cyber, tmp_path, monkeypatch)
    code = main(["provision", "production", "--plan", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    doc = __import__("json").loads(out[out.index("{"):])
    kinds = [(c["action"], c["kind"], c["name"]) for c in doc["plan"]["changes"]]
    assert kinds[:3] == [("create", "website", WEBSITE), ("create", "child_domain", DOMAIN),
                         ("create", "database", "shop_production")]
    assert not doc["applied"]
    assert not CREATES & set(cyber.names())
    assert "ChangeLinuxUserPassword" not in cyber.names()


def test_destroy_for_cyberpanel_needs_confirm_before_any_api_call(
        cyber: CyberPanelFake, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    _cyber_cli(cyber, tmp_path, monkeypatch)
    assert main(["destroy", "production"]) == 2
    assert "--confirm example-site-production" in capsys.readouterr().err
    assert cyber.calls == []
    cyber.add_website(WEBSITE)  # not forge's: refused even when confirmed
    assert main(["destroy", "production", "--confirm", "example-site-production"]) == 1
    assert "forge only deletes websites it created" in capsys.readouterr().err
    assert WEBSITE in cyber.websites
