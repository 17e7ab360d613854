"""histosynth: synthetic histopathology dataset factory and benchmark suite.

Importing this package is cheap on purpose (no torch, no datasets): `histosynth ls` and the registries
must work without the heavy stack. Import sub-modules for the real work.
"""

__version__ = "0.1.0"
