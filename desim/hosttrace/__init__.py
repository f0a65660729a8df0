"""Real workloads recorded on a Linux host, for the ``replay`` workload element.

* ``desim.hosttrace.format``: the trace file (parquet): its columns, how it is read and checked;
* ``desim.hosttrace.events``: kernel trace events (tracefs, ``trace-cmd report``, ``perf
  script`` text) turned into the file's rows, with the page-table estimates;
* ``desim.hosttrace.tracefs``: ``desim record``: tracefs set up, the command run, undone.
"""
