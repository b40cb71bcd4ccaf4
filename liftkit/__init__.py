"""liftkit: a reproducible companion to the LIFT and SAMS-VAE papers.

- :mod:`liftkit.lift`: the LIFT paper (theory, library, oracle, screen, network, training, splits).
- :mod:`liftkit.perturb`: the SAMS-VAE paper (models, guides, objectives, evaluation, simulation).
- :mod:`liftkit.data`: the dataset manifest, checksummed downloads, loaders.
- :mod:`liftkit.companion`: the book machinery (profiles, runner, goldens, build, CLI).
- :mod:`liftkit.stats`, :mod:`liftkit.metrics`, :mod:`liftkit.plotting`, :mod:`liftkit.utils`:
  shared distributions, metrics, the figure theme, seeding and devices.

Examples
--------
>>> import liftkit
>>> gen = liftkit.set_seed(0)
>>> liftkit.resolve_device("cpu")
device(type='cpu')
"""

from liftkit.utils import resolve_device, set_seed

__version__ = "0.1.0"
__all__ = ["set_seed", "resolve_device", "__version__"]
