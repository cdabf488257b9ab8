"""FHE program compiler: builder API, IR, level/scale planner, Chebyshev approximation, executors.

Model authors write::

    from medtwin.program import ProgramBuilder
    b = ProgramBuilder(name="m", slots=n)
    x = b.input("x", range=(0.0, 1.0))
    b.output("y", b.apply(np.exp, x, domain=(0.0, 1.0), tol=1e-8))
    prog = b.build(params)          # params: CKKSParams / PlanParams (scale and first-prime bits)
    get_executor("numpy").run(prog, {"x": values})
"""
from __future__ import annotations

from medtwin.program.bounds import NoiseModel
from medtwin.program.builder import Expr, Plain, ProgramBuilder
from medtwin.program.chebyshev import eval_chebyshev_ps, eval_power_bsgs, ps_depth
from medtwin.program.executors import (CallbackProgress, Executor, NumpyExecutor, OpenFHEExecutor, ProgressMeter,
                                       available_executors, get_executor, register_executor)
from medtwin.program.ir import Assumption, InputSpec, Op, OutputSpec, PlanParams, Program, Region

__all__ = [
    "Assumption", "CallbackProgress", "Executor", "Expr", "InputSpec", "NoiseModel", "NumpyExecutor",
    "OpenFHEExecutor", "Op", "OutputSpec", "Plain", "PlanParams", "Program", "ProgramBuilder", "ProgressMeter",
    "Region", "available_executors", "eval_chebyshev_ps", "eval_power_bsgs", "get_executor", "ps_depth",
    "register_executor",
]
