"""Only the package list lives here (everything else is in pyproject.toml).

pyproject.toml's package finder cannot add a package mapped from another folder, so this lists
kdstudio's packages (every folder with an __init__.py) plus kdstudio.resources, which
pyproject.toml's [tool.setuptools.package-dir] maps to the top-level resources/ folder.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["kdstudio", "kdstudio.*"]), "kdstudio.resources"])
