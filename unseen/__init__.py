"""unseen: dataset pruning from a generalization perspective (UNSEEN, arXiv 2511.12988).

Plain Python on numpy, torch and pyarrow, one module per stage: `unseen.features`, `unseen.scores` (held-out and
seen scores), `unseen.selection` (the UNSEEN objective, multi-step, baselines), `unseen.retrain`; beneath them
`unseen.data`, `unseen.models`, `unseen.training`, `unseen.tables`, `unseen.checks` (params, data and input tables
checked before a run), and at the ground floor `unseen.config`, `unseen.budgets` and `unseen.io`.
"""
