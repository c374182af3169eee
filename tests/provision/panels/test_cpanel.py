"""The cPanel client against the lab's fake cPanel account (tests/lab/cpanel.py),
over TLS with the lab's CA: domains with their document roots (and the
public_html restriction), databases with the prefix, SSH keys, shell access,
and cPanel's error forms without the token or a password in them."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from lab import leaks
from lab.cpanel import CpanelFake

from forge_ci.errors import ProvisionError
from forge_ci.provision.cpanel import CpanelApi
from forge_ci.provision.errors import ProviderApiError, ProviderAuthError, ProviderUnavailable
from forge_ci.provision.policy import ProvisionPolicy as Policy

FAST = Policy(poll_interval=0.0, action_timeout=30.0, api_retries=1, api_backoff=0.0)
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIForgeLabDeployKeyForTests forge-deploy"
INSIDE = "public_html/blog/current/web"


@pytest.fixture
def fake() -> Iterator[CpanelFake]:
    with CpanelFake() as server:
        yield server


def client(fake: CpanelFake, *, token: str | None = None,
           verify: bool | str | None = None) -> CpanelApi:
    return CpanelApi(fake.url, fake.user, fake.token if token is None else token, FAST,
                     verify=str(fake.ca_file) if verify is None else verify)


def db_password() -> str:
    value = secrets.token_urlsafe(18)
    leaks.register(value)
    return value


def test_a_subdomain_is_created_with_its_docroot_and_read_back(fake: CpanelFake) -> None:
    data, created = client(fake).ensure_domain("blog.example.ly", INSIDE)
    assert created is True
    assert data.documentroot == f"/home/{fake.user}/{INSIDE}"
    assert fake.names() == ["DomainInfo::list_domains", "DomainInfo::list_domains",
                            "SubDomain::addsubdomain", "DomainInfo::single_domain_data"]
    sub = next(c for c in fake.calls if c.name == "SubDomain::addsubdomain")
    assert sub.params == {"domain": "blog", "rootdomain": "example.ly", "dir": INSIDE}
    # cPanel makes the document root like mkdir -p: every parent exists.
    assert {f"/home/{fake.user}/public_html/blog", f"/home/{fake.user}/{INSIDE}"} <= fake.dirs


def test_an_existing_domain_is_adopted_without_a_create_call(fake: CpanelFake) -> None:
    fake.add_subdomain("blog.example.ly", INSIDE)
    _, created = client(fake).ensure_domain("blog.example.ly", INSIDE)
    assert created is False
    assert "SubDomain::addsubdomain" not in fake.names()
    assert "AddonDomain::addaddondomain" not in fake.names()


def test_a_docroot_outside_public_html_is_moved_and_forge_says_so(fake: CpanelFake) -> None:
    with pytest.raises(ProvisionError) as err:
        client(fake).ensure_domain("blog.example.ly", "sites/blog/current/web")
    text = str(err.value)
    assert "moved under public_html" in text
    assert "Restrict document roots to public_html" in text
    assert "under public_html in forge.yml" in text
    # cPanel reported success and did move it.
    assert fake.calls[-2].name == "SubDomain::addsubdomain"
    moved = fake.domains["blog.example.ly"]["documentroot"]
    assert moved == f"/home/{fake.user}/public_html/sites/blog/current/web"


def test_with_the_restriction_off_the_docroot_is_where_asked() -> None:
    with CpanelFake(restrict_docroots=False) as fake:
        data, _ = client(fake).ensure_domain("blog.example.ly", "sites/blog/current/web")
    assert data.documentroot == f"/home/{fake.user}/sites/blog/current/web"


def test_an_adopted_domain_with_another_docroot_is_refused(fake: CpanelFake) -> None:
    fake.add_subdomain("blog.example.ly", "public_html/blog")
    with pytest.raises(ProvisionError) as err:
        client(fake).ensure_domain("blog.example.ly", INSIDE)
    assert f"not /home/{fake.user}/{INSIDE}" in str(err.value)


def test_another_domain_becomes_an_addon_domain_through_api2(fake: CpanelFake) -> None:
    data, created = client(fake).ensure_domain("other-shop.ly", "public_html/shop/current/web")
    assert created and data.type == "addon_domain"
    assert "AddonDomain::addaddondomain" in fake.names()
    call = next(c for c in fake.calls if c.name == "AddonDomain::addaddondomain")
    assert call.api == "api2" and call.params["cpanel_jsonapi_apiversion"] == "2"


def test_a_refused_uapi_call_is_status_0_with_errors(fake: CpanelFake) -> None:
    api = client(fake)
    api.create_domain("blog.example.ly", INSIDE)
    with pytest.raises(ProviderApiError) as err:
        api.create_domain("blog.example.ly", INSIDE)
    assert "already exists" in str(err.value)
    assert fake.calls[-1].status == 200  # a refusal, not an HTTP error


def test_a_refused_api2_call_carries_its_error(fake: CpanelFake) -> None:
    with pytest.raises(ProviderApiError) as err:
        client(fake).api2("AddonDomain", "addaddondomain",
                          {"newdomain": "example.ly", "subdomain": "x"}, what="adding")
    assert "already exists" in str(err.value)


def test_a_wrong_token_is_401_and_an_other_accounts_token_is_403(fake: CpanelFake) -> None:
    wrong = secrets.token_hex(16).upper()
    leaks.register(wrong)
    with pytest.raises(ProviderAuthError) as err:
        client(fake, token=wrong).list_domains()
    assert "HTTP 401" in str(err.value) and "Manage API Tokens" in str(err.value)
    assert wrong not in str(err.value) and fake.token not in str(err.value)
    fake.other_tokens.add(wrong)
    with pytest.raises(ProviderAuthError) as err:
        client(fake, token=wrong).list_domains()
    assert "HTTP 403" in str(err.value)


def test_an_untrusted_certificate_is_a_clear_error(fake: CpanelFake) -> None:
    with pytest.raises(ProviderUnavailable) as err:
        client(fake, verify=True).list_domains()
    assert "certificate" in str(err.value)


def test_databases_take_the_prefix_which_uapi_never_adds(fake: CpanelFake) -> None:
    api = client(fake)
    rules = api.db_restrictions()
    assert rules.prefix == f"{fake.user[:8]}_"
    with pytest.raises(ProviderApiError) as err:
        api.create_database("wp")
    assert f"must begin with \u201c{rules.prefix}\u201d" in str(err.value)
    name, user, password = f"{rules.prefix}wp", f"{rules.prefix}wp", db_password()
    api.create_database(name)
    api.create_db_user(user, password)
    api.grant_all(user, name)
    assert api.list_databases() == {name: (user,)}
    assert fake.db_users[user] == password


def test_a_refused_db_user_never_shows_its_password(fake: CpanelFake) -> None:
    weak = secrets.token_hex(3)
    leaks.register(weak)
    with pytest.raises(ProviderApiError) as err:
        client(fake).create_db_user(f"{fake.user}_wp", weak)
    assert "too weak" in str(err.value) and weak not in str(err.value)
    call = next(c for c in fake.calls if c.name == "Mysql::create_user")
    assert call.params["password"] == "<secret>"


def test_the_deploy_key_is_imported_authorized_and_listed_as_public(fake: CpanelFake) -> None:
    api = client(fake)
    api.import_key("forge-deploy", KEY)
    api.authorize_key("forge-deploy")
    keys = api.list_public_keys()
    assert [(k.name, k.authorized, k.key) for k in keys] == [("forge-deploy", True, KEY)]
    listed = next(c for c in fake.calls if c.name == "SSH::listkeys")
    assert listed.params["types"] == "pub"
    # Without types=pub cPanel lists private keys: the imported key would seem absent.
    assert api.api2("SSH", "listkeys", {}, what="listing") == []


def test_shell_access_is_read_from_get_shell(fake: CpanelFake) -> None:
    shell = client(fake).shell()
    assert shell.has_terminal_access and shell.jailed
    fake.shell = "/usr/local/cpanel/bin/noshell"
    assert client(fake).shell().has_terminal_access is False


def test_an_unknown_function_is_a_refusal(fake: CpanelFake) -> None:
    with pytest.raises(ProviderApiError) as err:
        client(fake).uapi("Nope", "nothing", {}, what="calling nothing")
    assert err.value.code == "Nope::nothing"


def test_a_503_is_retried_by_the_policy_then_given_up(fake: CpanelFake) -> None:
    slept: list[float] = []
    policy = Policy(poll_interval=0.0, api_retries=1, api_backoff=0.5, sleep=slept.append)
    api = CpanelApi(fake.url, fake.user, fake.token, policy, verify=str(fake.ca_file))
    fake.unavailable(1)
    assert api.list_domains().main_domain == "example.ly"
    assert slept == [0.5]
    fake.unavailable(2)
    with pytest.raises(ProviderUnavailable) as err:
        api.list_domains()
    assert "HTTP 503" in str(err.value)
