"""Provisioning: a server for an environment, made from forge.yml, idempotently.

Layout::

    base.py        the Provider seam: observe -> plan (plain-data changes) -> apply
    providers.py   which provider a provision: section names
    hetzner/       Hetzner Cloud through hcloud (api, state, observe, changes, apply)
    ssh/           an existing Debian/Ubuntu server, set up over SSH (probe, plan, apply)
    https.sh       forge-https: the ACME certificate on the server (lego, nginx, timer)
    site.py        per-environment values resolved from forge.yml
    hostkeys.py    first-boot host keys, known_hosts lines, fingerprints
    stack.py       the server's files: nginx, PHP-FPM pool, sshd, setup, rotation, HTTPS
    cloudinit.py   those files as #cloud-config user data
    bootstrap.py   the first verified SSH connection: wait for cloud-init, rotate the host key
    reconcile.py   provision and destroy, start to end
    policy.py      retry and poll policy (tests pass zero)
    errors.py      this package's leaves of the error tree
    cli.py         forge-ci provision / destroy
"""
