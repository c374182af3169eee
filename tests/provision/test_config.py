"""The provision: section and the per-environment values resolved from it."""

from __future__ import annotations

import pytest

from forge_ci.config import parse
from forge_ci.errors import ConfigError
from forge_ci.provision.site import resolve

BASE = """\
version: 1
project: example-site
environments:
  production:
    url: https://www.example.com/
    hosts: [{ host: 203.0.113.10, user: web }]
    path: /srv/www/example.com
  local:
    path: site
provision:
"""


def test_defaults_and_per_environment_values() -> None:
    config = parse(BASE + "  provider: hetzner\n", {}).config
    prov = config.provision
    assert prov is not None
    assert (prov.server_type, prov.image, prov.location, prov.ssh_port) == (
        "cx22", "ubuntu-24.04", "fsn1", 22)
    assert prov.ssh_sources == ("0.0.0.0/0", "::/0")
    site = resolve(config, "production", "forge.yml")
    assert site.server_name == "example-site-production"
    assert site.deploy_user == "web"  # from the environment's host
    assert site.path == "/srv/www/example.com"
    assert site.database == "example_site_production"
    assert site.hostnames == ("www.example.com",)
    local = resolve(config, "local", "forge.yml")
    assert local.path == "/srv/www/example-site" and local.deploy_user == "deploy"
    assert local.hostnames == ()


def test_explicit_values_win() -> None:
    config = parse(BASE + "  name: '{project}-{environment}-2'\n  deploy_user: forge\n"
                   "  path: /var/www/site\n  database: wp\n  ssh_port: 2222\n", {}).config
    site = resolve(config, "production", "forge.yml")
    assert (site.server_name, site.deploy_user, site.path, site.database, site.ssh_port) == (
        "example-site-production-2", "forge", "/var/www/site", "wp", 2222)


def test_ssh_sources_are_normalised_cidrs() -> None:
    config = parse(BASE + "  ssh_sources: [203.0.113.7, '2001:db8::/32']\n", {}).config
    assert config.provision is not None
    assert config.provision.ssh_sources == ("203.0.113.7/32", "2001:db8::/32")


@pytest.mark.parametrize(("section", "words"), [
    ("  ssh_sources: [203.0.113.0/33]\n", "not a network in CIDR notation"),
    ("  ssh_sources: [203.0.113.1/24]\n", "not a network in CIDR notation"),
    ("  labels: { managed-by: me }\n", "set by forge"),
    ("  labels: { team: 'a b' }\n", "value must be"),
    ("  name: '{project}-{region}'\n", "only use {project} and {environment}"),
    ("  fallback_locations: [nbg1, nbg1]\n", "listed twice"),
    ("  provider: aws\n", "provider"),
    ("  sever_type: cx22\n", "did you mean 'server_type'"),
    ("  wait: { poll_intervall: 1 }\n", "did you mean 'poll_interval'"),
])
def test_mistakes_name_the_key(section: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(BASE + section, {})
    assert words in str(info.value)
    assert "provision" in str(info.value)


def test_server_name_must_be_a_host_name() -> None:
    config = parse(BASE + "  name: Example_Site\n", {}).config
    with pytest.raises(ConfigError) as info:
        resolve(config, "production", "forge.yml")
    assert info.value.key == "provision.name"


def _https(block: str, url: str = "https://www.example.com/") -> str:
    return BASE.replace("    url: https://www.example.com/\n",
                        f"    url: {url}\n{block}") + "  provider: hetzner\n"


def test_https_defaults_from_the_url_and_the_names_follow_it() -> None:
    site = resolve(parse(_https(""), {}).config, "production", "forge.yml")
    assert site.tls is not None
    assert (site.tls.names, site.tls.acme, site.tls.hsts) == (
        ("www.example.com",), "letsencrypt", False)
    config = parse(_https("    https: { email: ops@example.com, acme: letsencrypt-staging, "
                          "hsts: true, names: [example.com, www.example.com] }\n"), {}).config
    tls = resolve(config, "production", "forge.yml").tls
    assert tls is not None and tls.names == ("www.example.com", "example.com")
    assert "FORGE_HTTPS_EMAIL=ops@example.com" in tls.settings()
    # An http:// site without an https: key gets no certificate.
    assert resolve(parse(_https("", "http://www.example.com/"), {}).config,
                   "production", "forge.yml").tls is None


def test_acme_off_as_yaml_writes_it_and_bad_values_are_named() -> None:
    tls = resolve(parse(_https("    https: { acme: off }\n"), {}).config,
                  "production", "forge.yml").tls
    assert tls is not None and tls.acme == "off"
    with pytest.raises(ConfigError, match="use letsencrypt, letsencrypt-staging, off or the"):
        parse(_https("    https: { acme: lets-encrypt }\n"), {})
    with pytest.raises(ConfigError, match="is not a host name"):
        parse(_https("    https: { names: [Shop Example] }\n"), {})
    with pytest.raises(ConfigError, match="email"):
        parse(_https("    https: { email: \"ops@example.com; rm -rf /\" }\n"), {})


def test_provider_ssh_keeps_the_hosts_port_and_names_its_admin() -> None:
    text = BASE.replace("hosts: [{ host: 203.0.113.10, user: web }]",
                        "hosts: [{ host: 203.0.113.10, port: 2202, user: web }]")
    config = parse(text + "  provider: ssh\n  admin_user: ubuntu\n", {}).config
    assert config.provision is not None and config.provision.admin_user == "ubuntu"
    assert resolve(config, "production", "forge.yml").ssh_port == 2202
    with pytest.raises(ConfigError, match="provider"):
        parse(BASE + "  provider: linode\n", {})
