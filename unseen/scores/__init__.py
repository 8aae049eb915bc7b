"""Generalization scoring: every common pruning score, from models that never saw the sample (unseen) or did (seen).

`unseen_scores(dataset, params.scores, seed=...)` trains the scoring models and returns the `ScoreTable`;
`embedding_scores(embeddings, labels, params.scores, seed=...)` does it with probes on embeddings alone;
`register_score(name, fn)` adds a score; the pipeline's tasks call the pieces (`train_scoring_model`,
`save_record`, `combine_records`) one model at a time.
"""

from unseen.scores.functions import (
    SCORES, ScoreError, ScoreSpec, cut_flag_columns, cut_flags_of, difficulty, label_issue_flags, misclassified_flags, oversampled_candidates_of,
    register_score, resolve_score,
)
from unseen.scores.records import (
    ModelRecord,
    ScoringModel,
    load_record,
    probe_record,
    save_record,
    scoring_models,
    stratified_folds,
    train_scoring_model,
)
from unseen.scores.scoring import record_scores, score_record, score_step, step_scorer, step_scores
from unseen.scores.report import compare_seen_unseen, histogram_rows, scores_report, seen_unseen_histograms, spread
from unseen.scores.table import ScoreTable, combine_records, embedding_scores, unseen_scores

__all__ = [
    "SCORES",
    "ModelRecord",
    "ScoreError",
    "ScoreSpec",
    "ScoreTable",
    "ScoringModel",
    "combine_records",
    "compare_seen_unseen",
    "difficulty",
    "embedding_scores",
    "histogram_rows",
    "cut_flag_columns",
    "cut_flags_of",
    "label_issue_flags",
    "misclassified_flags",
    "oversampled_candidates_of",
    "load_record",
    "probe_record",
    "record_scores",
    "register_score",
    "resolve_score",
    "save_record",
    "score_record",
    "score_step",
    "scores_report",
    "scoring_models",
    "seen_unseen_histograms",
    "spread",
    "step_scorer",
    "step_scores",
    "stratified_folds",
    "train_scoring_model",
    "unseen_scores",
]
