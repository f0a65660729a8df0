"""Experiments: sweeps over config keys, replications with paired seeds, parallel resumable runs.

``experiment`` loads and expands an experiment file into ``RunSpec``s; ``worker`` runs one and
writes its directory; ``runner`` executes many (serial, process pool, Dask) and resumes;
``stats`` (pure numpy/pandas/scipy) gives confidence intervals and warm-up deletion;
``aggregate`` builds runs.parquet and points.parquet; ``command`` is ``desim sweep``;
``pool`` starts the local process pool's fork server early, importing nothing heavy.
"""
