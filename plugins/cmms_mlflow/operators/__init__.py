"""The plugin's operators, one module per DAG family; DAG files import them from here."""

from cmms_mlflow.operators.base import PROMOTION_POOL, MlflowBaseOperator
from cmms_mlflow.operators.data_ops import ExtractBatchOperator, MlflowValidateDataOperator
from cmms_mlflow.operators.promotion_ops import MlflowChangeStageOperator, MlflowResolveVersionOperator
from cmms_mlflow.operators.scoring_ops import MlflowBatchScoreOperator
from cmms_mlflow.operators.training_ops import (
    MlflowDecisionOperator,
    MlflowModelReportOperator,
    MlflowPromoteModelOperator,
    MlflowRegisterModelOperator,
    MlflowRejectModelOperator,
    MlflowTrainModelOperator,
    MlflowTransitionModelOperator,
    MlflowValidateModelOperator,
)

__all__ = [
    "ExtractBatchOperator",
    "MlflowValidateDataOperator",
    "PROMOTION_POOL",
    "MlflowBaseOperator",
    "MlflowBatchScoreOperator",
    "MlflowChangeStageOperator",
    "MlflowDecisionOperator",
    "MlflowModelReportOperator",
    "MlflowPromoteModelOperator",
    "MlflowRegisterModelOperator",
    "MlflowRejectModelOperator",
    "MlflowResolveVersionOperator",
    "MlflowTrainModelOperator",
    "MlflowTransitionModelOperator",
    "MlflowValidateModelOperator",
]
