"""Every knob of the pipeline, read from one params.yaml into one typed, validated object.

The ground floor of the library: it imports nothing else of the project and checks syntax and ranges only. Whether
a named score or selection method exists is checked by `unseen.checks` against their registries, before a run.
"""

from unseen.config.files import format_validation_error, load_params, read_yaml_mapping, validate_params
from unseen.config.runtime import DaskParams, IncrementParams, InputError, OrchestrationParams, ParamsError, TrackingParams
from unseen.config.schedules import LABEL_ISSUE_CUTS, OVERSAMPLED_CUTS
from unseen.config.sections import (
    STAGE_PARAMS,
    STAGES,
    DataParams,
    FeaturesParams,
    Params,
    ProbeRecipe,
    RetrainParams,
    ScoresParams,
    SelectParams,
    TrainRecipe,
)

__all__ = [
    "LABEL_ISSUE_CUTS",
    "OVERSAMPLED_CUTS",
    "STAGES",
    "STAGE_PARAMS",
    "DaskParams",
    "DataParams",
    "FeaturesParams",
    "IncrementParams",
    "InputError",
    "OrchestrationParams",
    "Params",
    "ParamsError",
    "ProbeRecipe",
    "RetrainParams",
    "ScoresParams",
    "SelectParams",
    "TrackingParams",
    "TrainRecipe",
    "format_validation_error",
    "load_params",
    "read_yaml_mapping",
    "validate_params",
]
