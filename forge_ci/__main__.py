from forge_ci.cli import run

run()
