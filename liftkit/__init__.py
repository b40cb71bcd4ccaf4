"""liftkit: a reproducible companion to the LIFT and SAMS-VAE papers."""

from liftkit.utils import resolve_device, set_seed

__version__ = "0.1.0"
__all__ = ["set_seed", "resolve_device", "__version__"]
