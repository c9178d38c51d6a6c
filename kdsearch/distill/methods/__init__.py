"""Built-in distillation methods: every module in this package registers one method.

Importing the package imports each of its modules, so adding a method is adding one file
here that uses ``@register_method("name")``.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
