"""Networks, registered under kind ``net``. Every module in this package is imported (and so
registers its nets) when the package is; add a file here and it is picked up."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
