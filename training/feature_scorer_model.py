"""MLflow models-from-code entry of :class:`training.scoring_models.FeatureScorer` (loaded by MLflow, which
runs this file; nothing imports it)."""

import mlflow.models

from training.scoring_models import FeatureScorer

mlflow.models.set_model(FeatureScorer())
