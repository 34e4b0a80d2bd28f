"""computewatch.analysis: how many chips a Verifier must inspect (Shavit 2023, §3.2, App. B, C).

Eq. 1 in its exact and linear forms, Table 1, footnote 5, the 2H detection target, Appendix C
(Figure 2, Theorem 1), collusion, detection probabilities of sampling plans, and a Monte Carlo model of the world that
checks the closed forms. Symbols keep the paper's names (H, C, a, f, T, T_m, s, p).
"""

from computewatch.analysis.collusion import (
    colluding_detection_probability,
    per_prover_samples,
    pooled_setting,
    proportional_contributions,
)
from computewatch.analysis.detection import (
    STRATEGIES,
    RunShape,
    Strategy,
    detection_probability,
    detection_probability_windowed,
    inspection_windows,
    run_shape,
    shape_detection_probability,
)
from computewatch.analysis.errors import (
    AnalysisError,
    InfeasibleSettingError,
    InvalidParameterError,
)
from computewatch.analysis.evasion import (
    figure2_grid,
    figure2_worst,
    lemma1_gap,
    p_d_longer,
    p_d_more_chips,
    samples_for_probability,
)
from computewatch.analysis.inspectors import (
    CHIPS_PER_INSPECTOR,
    FOOTNOTE5,
    footnote5,
    inspectors_needed,
)
from computewatch.analysis.montecarlo import (
    MonteCarloResult,
    simulate,
    simulate_enumerating,
    wilson_interval,
)
from computewatch.analysis.params import DAYS_PER_YEAR, H100_FLOPS_PER_DAY, Setting
from computewatch.analysis.plan import SamplingPlan, plan, table_samples_per_year
from computewatch.analysis.sampling import (
    FORMULAS,
    Formula,
    annualise,
    samples_exact,
    samples_exact_continuous,
    samples_linear,
)
from computewatch.analysis.table1 import (
    STOCKPILES,
    TABLE1_MODELS,
    Table1Model,
    Table1Row,
    table1,
)
from computewatch.analysis.target import (
    DETECTION_TARGET_FACTOR,
    incriminating_stretch,
    run_detection_probability,
)

__all__ = [
    "CHIPS_PER_INSPECTOR",
    "DAYS_PER_YEAR",
    "DETECTION_TARGET_FACTOR",
    "FOOTNOTE5",
    "FORMULAS",
    "H100_FLOPS_PER_DAY",
    "STOCKPILES",
    "STRATEGIES",
    "TABLE1_MODELS",
    "AnalysisError",
    "Formula",
    "InfeasibleSettingError",
    "InvalidParameterError",
    "MonteCarloResult",
    "RunShape",
    "SamplingPlan",
    "Setting",
    "Strategy",
    "Table1Model",
    "Table1Row",
    "annualise",
    "colluding_detection_probability",
    "detection_probability",
    "detection_probability_windowed",
    "figure2_grid",
    "figure2_worst",
    "footnote5",
    "incriminating_stretch",
    "inspection_windows",
    "inspectors_needed",
    "lemma1_gap",
    "p_d_longer",
    "p_d_more_chips",
    "per_prover_samples",
    "plan",
    "pooled_setting",
    "proportional_contributions",
    "run_detection_probability",
    "run_shape",
    "samples_exact",
    "samples_exact_continuous",
    "samples_for_probability",
    "samples_linear",
    "shape_detection_probability",
    "simulate",
    "simulate_enumerating",
    "table1",
    "table_samples_per_year",
    "wilson_interval",
]
