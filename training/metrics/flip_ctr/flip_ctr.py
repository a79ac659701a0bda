"""`evaluate` metric module for CTR prediction: ROC-AUC and LogLoss of click probabilities.

Load it offline by path: `evaluate.load("training/metrics/flip_ctr")`, then `add_batch(prediction_scores=...,
references=...)` and `compute()`. Kept self-contained (evaluate copies this file alone); one import per line.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

_DESCRIPTION = "ROC-AUC and LogLoss (binary cross-entropy) of predicted click probabilities against 0/1 clicks."
_KWARGS_DESCRIPTION = """
Args:
    prediction_scores (`list[float]`): predicted click probabilities in [0, 1].
    references (`list[int]`): observed clicks, 0 or 1.
Returns:
    auc (`float`): area under the ROC curve; logloss (`float`): mean binary cross-entropy.
Example:
    >>> metric = evaluate.load("training/metrics/flip_ctr")
    >>> metric.compute(prediction_scores=[0.1, 0.8, 0.7], references=[0, 1, 0])["auc"]
    1.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class FlipCtr(evaluate.Metric):
    """AUC + LogLoss for CTR prediction."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"prediction_scores": datasets.Value("float64"), "references": datasets.Value("int32")}
            ),
        )

    def _compute(self, prediction_scores, references):
        scores = np.asarray(prediction_scores, dtype=np.float64)
        return {
            "auc": float(roc_auc_score(references, scores)),
            "logloss": float(log_loss(references, scores, labels=[0, 1])),
        }
