"""The CyberPanel client against the lab's fake CyberPanel (tests/lab/cyberpanel.py):
website and database creation or adoption, the status-file polling, and every
error form CyberPanel has, translated without the password."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import pytest
import requests
from lab import leaks
from lab._proc import free_port
from lab.cyberpanel import CyberPanelFake, cloud_token

from forge_ci.errors import SecretError, UsageError
from forge_ci.provision.cyberpanel import CyberPanelApi
from forge_ci.provision.errors import (
    ProviderApiError,
    ProviderAuthError,
    ProviderUnavailable,
    ProvisionTimeout,
)
from forge_ci.provision.policy import ProvisionPolicy as Policy

FAST = Policy(poll_interval=0.0, action_timeout=30.0, api_retries=1, api_backoff=0.0)
DOMAIN = "shop.example.org"


@pytest.fixture
def fake() -> Iterator[CyberPanelFake]:
    with CyberPanelFake() as server:
        yield server


def client(fake: CyberPanelFake, *, password: str | None = None, user: str = "admin",
           policy: Policy = FAST) -> CyberPanelApi:
    return CyberPanelApi(fake.url, user, fake.admin_password if password is None else password,
                         policy)


def site_password() -> str:
    value = secrets.token_urlsafe(16)
    leaks.register(value)
    return value


def create(api: CyberPanelApi, domain: str = DOMAIN, package: str = "Default") -> bool:
    return api.ensure_website(domain=domain, package=package, owner_email="ops@example.org",
                              website_owner="shopowner", owner_password=site_password())


def test_verify_connection_uses_both_apis(fake: CyberPanelFake) -> None:
    client(fake).verify_connection()
    assert fake.names() == ["verifyConn", "verifyLogin"]


def test_a_new_website_is_created_and_polled_until_done(fake: CyberPanelFake) -> None:
    assert create(client(fake)) is True
    assert DOMAIN in fake.websites
    # Listed first, created once, then statusFunc until the [200] line.
    assert fake.names() == ["fetchWebsites", "createWebsite"] + ["statusFunc"] * 3
    assert fake.websites[DOMAIN]["admin"] == "shopowner"


def test_an_existing_website_is_adopted_without_a_create_call(fake: CyberPanelFake) -> None:
    fake.add_website(DOMAIN)
    assert create(client(fake)) is False
    assert fake.count("createWebsite") == 0
    assert fake.names() == ["fetchWebsites"]


def test_a_second_run_creates_nothing(fake: CyberPanelFake) -> None:
    api = client(fake)
    create(api)
    fake.calls.clear()
    assert create(api) is False
    assert fake.count("createWebsite") == 0


def test_a_duplicate_domain_is_answered_success_then_fails_in_the_status_file(
        fake: CyberPanelFake) -> None:
    fake.add_website(DOMAIN)
    with pytest.raises(ProviderApiError) as err:
        client(fake).create_website(domain=DOMAIN, package="Default",
                                    owner_email="ops@example.org", website_owner="shopowner",
                                    owner_password=site_password())
    create_call = next(c for c in fake.calls if c.name == "createWebsite")
    assert create_call.status == 200  # CyberPanel said yes...
    assert fake.count("statusFunc") == 3  # ...and the truth came from polling
    assert "This website already exists" in str(err.value)
    assert "adopt" in str(err.value)


def test_an_unknown_package_fails_in_the_status_file_with_a_hint(fake: CyberPanelFake) -> None:
    with pytest.raises(ProviderApiError) as err:
        create(client(fake), package="Gold")
    assert "Package matching query does not exist" in str(err.value)
    assert "'Gold' does not exist" in str(err.value)
    assert DOMAIN not in fake.websites


def test_a_job_still_running_at_the_time_limit_is_a_timeout(fake: CyberPanelFake) -> None:
    fake.creation_polls = 50
    impatient = Policy(poll_interval=0.0, action_timeout=0.0, api_retries=0, api_backoff=0.0)
    with pytest.raises(ProvisionTimeout) as err:
        create(client(fake, policy=impatient))
    assert "still working" in str(err.value)


def test_the_middleware_refuses_a_dollar_in_the_admin_password_after_verifyconn_passed() -> None:
    password = f"Pa$$-{secrets.token_urlsafe(12)}"
    with CyberPanelFake(admin_password=password) as fake:
        api = client(fake)
        api.verify_connection()  # verifyConn is exempt from the filter
        with pytest.raises(SecretError) as err:
            create(api)
    text = str(err.value)
    assert "admin password contains a character" in text
    assert "change the CyberPanel admin password" in text
    assert password not in text
    assert fake.count("createWebsite") == 1 and DOMAIN not in fake.websites


def test_the_middleware_refusing_another_field_names_it(fake: CyberPanelFake) -> None:
    api = client(fake)
    with pytest.raises(UsageError) as err:
        api.create_website(domain="shop.example.org", package="Default",
                           owner_email="ops@example.org", website_owner="shop;owner",
                           owner_password=site_password())
    assert "websiteOwner" in str(err.value)
    assert fake.admin_password not in str(err.value)


def test_a_wrong_password_is_an_auth_error_without_the_password(fake: CyberPanelFake) -> None:
    wrong = site_password()
    with pytest.raises(ProviderAuthError) as err:
        client(fake, password=wrong).verify_connection()
    assert wrong not in str(err.value) and fake.admin_password not in str(err.value)
    with pytest.raises(ProviderAuthError) as err:
        client(fake, password=wrong).list_websites()  # cloudAPI's token differs too
    assert "Invalid login information" in str(err.value)


def test_an_unknown_admin_user_crashes_createwebsite_to_an_html_500(fake: CyberPanelFake) -> None:
    api = client(fake, user="root")
    with pytest.raises(ProviderAuthError):
        api.verify_connection()
    with pytest.raises(ProviderApiError) as err:
        api.create_website(domain=DOMAIN, package="Default", owner_email="ops@example.org",
                           website_owner="shopowner", owner_password=site_password())
    assert err.value.code == "http_500"
    assert "check the admin user name" in str(err.value)
    assert fake.calls[-1].status == 500


def test_api_access_disabled_says_where_to_enable_it(fake: CyberPanelFake) -> None:
    fake.api_enabled = False
    with pytest.raises(ProviderAuthError) as err:
        client(fake).verify_connection()
    assert "API Access" in str(err.value)


def test_websites_are_listed_across_pages(fake: CyberPanelFake) -> None:
    for i in range(12):
        fake.add_website(f"site{i:02d}.example.org")
    sites = client(fake).list_websites()
    assert len(sites) == 12 and fake.count("fetchWebsites") == 2


def test_a_database_is_created_verbatim_then_adopted(fake: CyberPanelFake) -> None:
    fake.add_website(DOMAIN)
    api, password = client(fake), site_password()
    assert api.ensure_database(DOMAIN, "shop_wp", "shop_wp", password) is True
    assert fake.databases["shop_wp"]["dbUser"] == "shop_wp"  # no prefix added
    fake.calls.clear()
    assert api.ensure_database(DOMAIN, "shop_wp", "shop_wp", password) is False
    assert fake.names() == ["fetchDatabases"]


def test_a_database_with_another_user_is_refused(fake: CyberPanelFake) -> None:
    fake.add_website(DOMAIN)
    api = client(fake)
    api.create_database(DOMAIN, "shop_wp", "someone", site_password())
    with pytest.raises(ProviderApiError) as err:
        api.ensure_database(DOMAIN, "shop_wp", "shop_wp", site_password())
    assert "exists with the user someone" in str(err.value)


def test_database_names_over_32_characters_are_refused_before_any_call(
        fake: CyberPanelFake) -> None:
    fake.add_website(DOMAIN)
    with pytest.raises(UsageError) as err:
        client(fake).ensure_database(DOMAIN, "d" * 33, "u", site_password())
    assert "at most 32" in str(err.value)
    assert fake.count("submitDBCreation") == 0


def test_the_fake_refuses_a_33_character_name_with_http_200(fake: CyberPanelFake) -> None:
    fake.add_website(DOMAIN)
    body = {"serverUserName": "admin", "controller": "submitDBCreation",
            "databaseWebsite": DOMAIN, "dbName": "d" * 33, "dbUsername": "u",
            "dbPassword": "x", "webUserName": ""}
    answer = requests.post(f"{fake.url}/cloudAPI/", data=json.dumps(body), timeout=10,
                           headers={"Authorization": cloud_token("admin", fake.admin_password)})
    assert answer.status_code == 200
    assert answer.json()["createDBStatus"] == 0
    assert "32 at max" in answer.json()["error_message"]


def test_a_database_error_never_shows_its_password(fake: CyberPanelFake) -> None:
    password = site_password()
    with pytest.raises(ProviderApiError) as err:
        client(fake).create_database("missing.example.org", "db", "u", password)
    assert "Websites matching query does not exist" in str(err.value)
    assert password not in str(err.value)


def test_the_site_user_password_is_set_through_cloudapi(fake: CyberPanelFake) -> None:
    site = fake.add_website(DOMAIN)
    password = site_password()
    assert client(fake).set_linux_password(DOMAIN, password) == site["externalApp"]
    assert fake.linux_passwords[site["externalApp"]] == password


def test_a_quote_in_the_site_user_password_is_refused_before_cyberpanel_drops_it(
        fake: CyberPanelFake) -> None:
    site = fake.add_website(DOMAIN)
    with pytest.raises(UsageError):
        client(fake).set_linux_password(DOMAIN, "it's-" + secrets.token_urlsafe(8))
    assert fake.count("ChangeLinuxUserPassword") == 0
    # What forge avoids: CyberPanel says yes and sets nothing.
    body = {"serverUserName": "admin", "controller": "ChangeLinuxUserPassword",
            "domain": DOMAIN, "password": "it's-broken"}
    answer = requests.post(f"{fake.url}/cloudAPI/", data=json.dumps(body), timeout=10,
                           headers={"Authorization": cloud_token("admin", fake.admin_password)})
    assert answer.json()["status"] == 1
    assert site["externalApp"] not in fake.linux_passwords


def test_a_refused_root_key_reads_the_misspelled_error_key(fake: CyberPanelFake) -> None:
    with pytest.raises(ProviderApiError) as err:
        client(fake).add_root_key("not a key")
    assert "Invalid public key" in str(err.value)  # from "error_mssage"
    client(fake).add_root_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample forge")
    assert len(fake.root_keys) == 1


def test_an_unreachable_panel_is_unavailable_after_retries() -> None:
    api = CyberPanelApi(f"http://127.0.0.1:{free_port()}", "admin", "x", FAST)
    with pytest.raises(ProviderUnavailable) as err:
        api.verify_connection()
    assert "cannot reach CyberPanel" in str(err.value)


def test_a_child_domain_gets_its_path_as_document_root_then_is_adopted(
        fake: CyberPanelFake) -> None:
    fake.add_website(DOMAIN)
    api = client(fake)
    child, created = api.ensure_child_domain(master=DOMAIN, domain="www2.example.org",
                                             path="site/current/web")
    assert created and child.path == f"/home/{DOMAIN}/site/current/web"
    assert fake.child_domains["www2.example.org"]["path"] == child.path
    assert fake.names() == ["fetchDomains", "submitDomainCreation"] + ["statusFunc"] * 3
    fake.calls.clear()
    _, created = api.ensure_child_domain(master=DOMAIN, domain="www2.example.org",
                                         path="site/current/web")
    assert created is False and fake.names() == ["fetchDomains"]


def test_a_child_domain_with_another_path_is_refused_not_moved(fake: CyberPanelFake) -> None:
    fake.add_website(DOMAIN)
    api = client(fake)
    api.ensure_child_domain(master=DOMAIN, domain="www2.example.org", path="old")
    with pytest.raises(ProviderApiError) as err:
        api.ensure_child_domain(master=DOMAIN, domain="www2.example.org", path="site/current/web")
    assert "cannot move a document root" in str(err.value)


def test_a_child_domain_that_is_a_website_fails_in_the_status_file(fake: CyberPanelFake) -> None:
    fake.add_website(DOMAIN)
    fake.add_website("taken.example.org")
    with pytest.raises(ProviderApiError) as err:
        client(fake).ensure_child_domain(master=DOMAIN, domain="taken.example.org", path="x")
    assert "already exists as a website" in str(err.value)
    assert fake.count("submitDomainCreation") == 1


def test_a_path_climbing_out_of_home_is_refused_before_cyberpanel(fake: CyberPanelFake) -> None:
    fake.add_website(DOMAIN)
    with pytest.raises(UsageError):
        client(fake).ensure_child_domain(master=DOMAIN, domain="www2.example.org",
                                         path="../other")
    assert fake.count("submitDomainCreation") == 0


def test_a_503_is_retried_by_the_policy_then_given_up(fake: CyberPanelFake) -> None:
    slept: list[float] = []
    policy = Policy(poll_interval=0.0, api_retries=2, api_backoff=1.0, sleep=slept.append)
    fake.unavailable(2)
    client(fake, policy=policy).verify_connection()
    assert slept == [1.0, 2.0] and fake.names()[-2:] == ["verifyConn", "verifyLogin"]
    fake.unavailable(3)
    with pytest.raises(ProviderUnavailable) as err:
        client(fake, policy=policy).verify_connection()
    assert "HTTP 503" in str(err.value)
