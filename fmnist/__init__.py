"""fmnist: config-driven Fashion-MNIST experiments."""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# the configs: in a checkout, fmnist/conf is a symlink to the top-level conf/; an installed wheel carries a copy
CONF_DIR = PACKAGE_DIR / "conf"
# where outputs/, data/ and models/ are: the checkout, or for an installed package the directory it is run from
PROJECT_ROOT = PACKAGE_DIR.parent if (PACKAGE_DIR.parent / "pyproject.toml").is_file() else Path.cwd()
