"""Packages: graphconv and its sub-packages, plus the top-level `passes/` folder installed
as `graphconv.passes` (so it can never clash with another `passes` on sys.path). The rest
of the project's metadata (the `graphconv` command: graphconv.console) is in pyproject.toml."""
from setuptools import find_packages, setup

setup(packages=find_packages(include=["graphconv", "graphconv.*"]) + ["graphconv.passes"],
      package_dir={"graphconv.passes": "passes"})
