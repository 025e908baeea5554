"""Methods: one sub-package each; importing this package imports every sub-package, which
registers its archs and method classes.  Adding a method is adding a folder here."""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if _module.ispkg:
        importlib.import_module(f"{__name__}.{_module.name}")
