"""uqeval: how good is a segmentation model's uncertainty, and are its aleatoric and
epistemic parts really separate?

The public API lives here; everything else may change. Its names are listed once, in
``__init__.pyi``, and each is imported from its module on first use, so
``import uqeval`` (and ``uqeval --help``) does not pay for numba, xarray or zarr until a
function that needs them is called. Set ``EAGER_IMPORT=1`` to import them all at once.
"""

import lazy_loader

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
__all__ += ["__version__"]
