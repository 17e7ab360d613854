"""Maps the required root folders into the one `histosynth` distribution.

pyproject.toml holds the metadata; setuptools cannot discover sub-packages of re-mapped folders
declaratively, so the package list is computed here.
"""

from setuptools import find_packages, setup

PACKAGE_DIRS = {
    "histosynth": "histosynth",
    "histosynth.generators": "generators",
    "histosynth.baselines": "baselines",
    "histosynth.benchmark": "benchmark",
    "histosynth.leaderboard": "leaderboard",
    "histosynth.data_cards": "data_cards",
}


def _packages() -> list[str]:
    packages = []
    for package, folder in PACKAGE_DIRS.items():
        packages.append(package)
        packages += [f"{package}.{sub}" for sub in find_packages(folder)]
    return packages


setup(
    package_dir=PACKAGE_DIRS,
    packages=_packages(),
    package_data={"histosynth": ["assets/*", "commands/templates/generator/*.tmpl"],
                  "histosynth.data_cards": ["templates/*", "cards/*"],
                  "histosynth.leaderboard": ["track_recipes/*.yaml"]},
    include_package_data=False,
)
