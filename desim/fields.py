"""The field types and bounds every config section uses, the plugins' parameters included.

They sit below the model so that a design or a workload element can type its ``Params``
without importing ``desim.config`` (which imports the plugins to validate their parameters).

Numbers are strict and bounded: ``true``/``false`` is never a number, counts are integers
(``8.0`` is 8, ``8.5`` is refused), nothing is infinite or NaN, and every count and size has a
generous upper bound stated here or in its ``Field`` (times: at most one day, see
``desim.units``), so that no value can make validation build a billion objects or a run
overflow 64-bit time.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from desim.units import TIME_UNITS, parse_size_bytes, parse_time_ns

_FLOAT_TEXT = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _integer(v: Any) -> Any:
    # pydantic's lax mode reads true as 1; YAML 1.1 reads 1e5 as a string
    if isinstance(v, bool):
        raise ValueError("expected an integer, not true/false")
    if isinstance(v, str) and _FLOAT_TEXT.fullmatch(v):
        v = float(v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _real(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError("expected a number, not true/false")
    return v


Int = Annotated[int, BeforeValidator(_integer)]
Real = Annotated[float, BeforeValidator(_real), Field(allow_inf_nan=False)]
# times dump as plain ns, or with units in a saved config (TIME_UNITS, Config.to_yaml_dict)
Duration = Annotated[int, BeforeValidator(parse_time_ns), Field(ge=0), TIME_UNITS]
PositiveDuration = Annotated[int, BeforeValidator(parse_time_ns), Field(gt=0), TIME_UNITS]
Size = Annotated[int, BeforeValidator(parse_size_bytes), Field(gt=0)]

MAX_CPUS = 4096
MAX_PROCESSES = 100_000  # processes alive at time 0 (each is a SimPy process at build)
MAX_TABLES = 1 << 20  # page tables per process or per call: 2 TiB mapped at 4 KiB
MAX_PAGES = 1 << 32  # pages of memory in any count (16 TiB at 4 KiB)
MAX_LOCKS = 65_536
MAX_PAGE_SIZE = 256 << 10  # the largest base page Linux has (hexagon, ppc44x: 256 KiB)
MAX_SEED = (1 << 63) - 1  # seeds are stored in int64 columns
MAX_BATCH = 1_000_000_000  # RCU callback limits
MAX_SAMPLES = 10_000_000  # time-series rows kept in memory per run
