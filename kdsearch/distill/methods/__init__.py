"""Built-in distillation methods: every module in this package registers one method.

The registry (:data:`kdsearch.distill.method.METHODS`) imports each module of this package on
its first lookup, so adding a method is adding one file here that uses
``@register_method("name")``.
"""
