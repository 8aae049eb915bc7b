"""unseen: dataset pruning from a generalization perspective (UNSEEN, arXiv 2511.12988).

Plain Python on numpy, torch and pyarrow: `unseen.scores` (held-out and seen scores), `unseen.selection`
(UNSEEN selection), `unseen.baselines`, `unseen.multistep`, `unseen.data`, `unseen.tables`, `unseen.inputs`
(input tables and params checked against the data before a run), `unseen.config`.
"""
