"""``forge-ci monitor``: is the site up, its certificate good, its backup fresh, its
disk free and its deploy lock not stuck? See :mod:`~forge_ci.monitor.checks` for
the checks, :mod:`~forge_ci.monitor.state` for what is remembered between runs."""
