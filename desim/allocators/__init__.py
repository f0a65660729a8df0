"""Page-table allocators, one module per design in the debate, registered by YAML name."""

from desim.registry import Registry

ALLOCATORS: Registry = Registry("allocator", "desim.allocators")
