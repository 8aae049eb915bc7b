"""Benchmarks of the pipeline: the sweep definition and its report (`sweep`, `report`), and scripts that time a run."""
