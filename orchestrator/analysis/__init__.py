"""Scaling analysis of a finished sweep: fitted laws, plots, a report and a recommendation.

Reads the experiment directory from disk only (numpy, scipy, pandas, matplotlib; never ray,
torch or transformers), so it runs on a laptop after the sweep ran on a cluster::

    from orchestrator.analysis import analyze
    result = analyze(Path("experiments/quickstart"), target=0.8)
    print(result.render_terminal())
"""

from orchestrator.analysis._analyze import AnalysisResult, analyze
from orchestrator.analysis._errors import AnalysisError
from orchestrator.analysis._fits import (
    Fit,
    FitKind,
    fit_amdahl,
    fit_joint_power_law,
    fit_power_law,
    leave_largest_out,
)
from orchestrator.analysis._series import Series, scaling_series

__all__ = [
    "AnalysisError",
    "AnalysisResult",
    "Fit",
    "FitKind",
    "Series",
    "analyze",
    "fit_amdahl",
    "fit_joint_power_law",
    "fit_power_law",
    "leave_largest_out",
    "scaling_series",
]
