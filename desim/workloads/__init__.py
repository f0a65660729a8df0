"""Workload elements, composable in one config (``workload: {element: params, ...}``)."""

from desim.registry import Registry

ELEMENTS: Registry = Registry("workload element", "desim.workloads")
