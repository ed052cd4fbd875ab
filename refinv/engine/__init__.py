"""One engine for every batch of recoveries: a plan of units, an executor, one store.

``refinv evaluate``, ``refinv sweep``, ``refinv report`` and ``refinv audit`` are the same
three steps: build a plan (:mod:`refinv.engine.plan`: one unit per model x mask x method x
split x shard, keyed by its content), run it (:mod:`refinv.engine.execute`: in this
process, on a process pool, or on Dask with :mod:`refinv.engine.dask`; each unit computed
by :func:`refinv.engine.work.run_unit`) into the SQLite store (:mod:`refinv.engine.store`;
a unit it already holds is not run again: resume), then compute a document from the store.
"""

from .execute import Summary, execute
from .plan import Plan, Unit, make_unit, recovery_units, unit_key
from .store import Store
from .work import run_unit

__all__ = [
    "Unit",
    "Plan",
    "unit_key",
    "make_unit",
    "recovery_units",
    "execute",
    "Summary",
    "run_unit",
    "Store",
]
