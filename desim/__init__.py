"""desim: a discrete-event simulator of page-table freeing by RCU on a multi-CPU Linux machine."""

__version__ = "0.1.0"
