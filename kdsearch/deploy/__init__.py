"""A student ready to deploy: exported to ONNX, TorchScript or torch.export with a checked
numerical difference (:mod:`.export`), and timed per batch on a device (:mod:`.latency`)."""

from kdsearch.deploy.export import EXPORT_FORMATS, ExportCheck, Exported, export_model
from kdsearch.deploy.latency import BACKENDS, Latency, measure_latency

__all__ = [
    "BACKENDS",
    "EXPORT_FORMATS",
    "ExportCheck",
    "Exported",
    "Latency",
    "export_model",
    "measure_latency",
]
