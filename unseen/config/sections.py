"""The sections of params.yaml as typed, validated, frozen pydantic models, and the params hash of each stage."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from unseen.config.runtime import IncrementParams, OrchestrationParams, Section, TrackingParams
from unseen.config.schedules import LABEL_ISSUE_CUTS, OVERSAMPLED_CUTS, Cutoff, FlagCut, Power, Ratio, Tilt, at_prune_ratio

STAGES = ("features", "scores", "select", "retrain")
STAGE_PARAMS: dict[str, tuple[str, ...]] = {
    "features": ("seed", "data", "features", "increment"),
    "scores": ("seed", "data", "features", "scores", "increment"),  # features: the probe scorer trains on the embeddings
    "select": ("seed", "data", "features", "scores", "increment", "select"),
    "retrain": ("seed", "data", "select", "retrain"),
}
"""The params sections each stage's outputs depend on: what its tables' params hash covers, and dvc.yaml's params."""


class TrainRecipe(Section):
    """How one model is trained: shared by the proxy, the scoring models and the retrained model."""

    model: Literal["small_cnn", "mlp", "resnet18"] = "small_cnn"
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    augment: Literal["none", "crop_flip"] = "none"
    lr_schedule: Literal["one_cycle", "cosine"] = "one_cycle"  # cosine: the CIFAR/ResNet-18 recipe of the papers


class DataParams(Section):
    name: Literal["fashion-mnist", "cifar10", "cifar100", "imagefolder", "manifest"] = "fashion-mnist"
    root: str = "data"
    download: bool = True
    verify_checksums: bool = True
    train_first: int | None = Field(None, ge=10)  # the first N train samples in the split's order: a collection that grows
    train_subset: int | None = Field(None, ge=10)
    test_subset: int | None = Field(None, ge=10)
    label_noise: float = Field(0.0, ge=0, lt=1)  # fraction of train labels flipped to another class (benchmarks)
    image_size: int | None = Field(None, ge=8)  # image files: shorter side resized to it, then centre-cropped square
    image_mode: Literal["RGB", "L"] = "RGB"  # image files: every image converted to this mode
    storage: Literal["auto", "memory", "stream"] = "auto"  # image files: decoded into memory, or from disk per batch
    memory_limit_gb: float = Field(2.0, gt=0)  # auto storage: in memory while the decoded images fit in this
    on_bad_image: Literal["error", "skip"] = "error"  # image files: an unreadable file stops the run, or is left out
    loader_workers: int = Field(2, ge=0)  # streamed images: decoding processes (0 in daemonic Dask workers)
    classes: tuple[str, ...] | None = None  # manifest: the class list (default: the train rows' labels, sorted)
    test_fraction: float = Field(0.1, gt=0, lt=1)  # manifest without a split column: test rows, chosen by sample id
    index_dir: str | None = None  # image files: cache of the pass that checks them (default $XDG_CACHE_HOME/unseen/images)

    @model_validator(mode="after")
    def _classes_are_distinct(self) -> "DataParams":
        if self.classes is not None and (len(set(self.classes)) != len(self.classes) or len(self.classes) < 2):
            raise ValueError(f"data.classes {list(self.classes)} must list at least two distinct class names")
        return self


class FeaturesParams(Section):
    extractor: str = "proxy"
    proxy: TrainRecipe = TrainRecipe(epochs=2)
    proxy_fraction: float = Field(1.0, gt=0, le=1)  # the stratified share of the train split the proxy trains on
    proxy_min_steps: int = Field(0, ge=0)  # the proxy trains more epochs where `proxy.epochs` would take fewer steps
    proxy_noisy_epochs: int = Field(0, ge=0)  # where the proxy's first epoch finds noisy labels, it trains anew this long
    proxy_noisy_share: float = Field(0.1, gt=0, le=1)  # noisy: this share of them under `proxy_noisy_probability`
    proxy_noisy_probability: float = Field(0.1, gt=0, lt=1)
    pca_components: int = Field(64, ge=1)
    batch_size: int = Field(128, ge=1)

    @field_validator("extractor")
    @classmethod
    def _known_extractor(cls, value: str) -> str:
        if value in ("proxy", "pixels") or (value.startswith("pretrained:") and len(value) > 11):
            return value
        raise ValueError(f"unknown extractor {value!r}; use one of: proxy, pixels, pretrained:<torchvision model name>")


def _check_window(window: tuple[int, int], epochs: int, where: str) -> None:
    first, last = window
    if not 1 <= first <= last <= epochs:
        raise ValueError(f"{where} {list(window)} must satisfy 1 <= first <= last <= epochs ({epochs})")


class ProbeRecipe(Section):
    """A probe scoring model on the embeddings of features.parquet: a linear layer, or one hidden ReLU layer."""

    model: Literal["linear", "mlp"] = "linear"
    hidden: int = Field(256, ge=1)  # mlp only
    epochs: int = Field(10, ge=1)
    score_epochs: tuple[int, int] = (6, 10)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0005, ge=0)
    lr_schedule: Literal["one_cycle", "cosine"] = "one_cycle"

    @model_validator(mode="after")
    def _window_inside_training(self) -> "ProbeRecipe":
        _check_window(self.score_epochs, self.epochs, "probe.score_epochs")
        return self


PUBLISHED_SEEN_WINDOWS: dict[str, tuple[float, float]] = {
    "el2n": (0.1, 0.1),  # Paul et al. 2021: early in training (epoch 20 of 200)
    "grand": (0.1, 0.1),
    "forgetting": (0.0, 1.0),  # Toneva et al. 2019: every epoch from the first
    "aum": (0.0, 0.33),  # Pleiss et al. 2020: up to the first learning-rate drop (the first third of their step schedule)
}
"""The windows of the seen scores as their papers compute them, as fractions of training (`scores.seen_windows`)."""


class ScoresParams(Section):
    scorer: Literal["cnn", "probe"] = "probe"  # cnn: fold models trained on the images (recipe); probe: on the embeddings (probe)
    folds: int = Field(2, ge=2)
    repeats: int = Field(1, ge=1)
    seen: bool = False
    probe: ProbeRecipe = ProbeRecipe()
    scores: tuple[str, ...] = ("el2n", "grand", "loss", "entropy", "margin", "forgetting", "aum", "label_issue")
    recipe: TrainRecipe = TrainRecipe(epochs=10)
    score_epochs: tuple[int, int] = (6, 10)
    batch_size: int = Field(1024, ge=1)
    seen_windows: dict[str, tuple[float, float]] = Field(default_factory=lambda: dict(PUBLISHED_SEEN_WINDOWS))

    @field_validator("scores")
    @classmethod
    def _scores_named(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("list at least one score, e.g. [el2n]")
        for entry in value:
            if not re.fullmatch(r"[a-z][a-z0-9_]*|[A-Za-z_][\w.]*:[A-Za-z_]\w*", entry):
                raise ValueError(f"{entry!r} is neither a score name nor 'package.module:function'")
        return value

    @property
    def score_names(self) -> tuple[str, ...]:
        """Column stems: the entry itself, or the function name of a 'module:function' entry."""
        return tuple(entry.partition(":")[2].lower() if ":" in entry else entry for entry in self.scores)

    @field_validator("seen_windows")
    @classmethod
    def _fractions_of_training(cls, value: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for name, (first, last) in value.items():
            if not 0 <= first <= last <= 1 or last == 0:
                raise ValueError(f"seen_windows.{name}: [{first}, {last}] must be fractions of training with 0 <= first <= last <= 1, last > 0")
        return value

    @model_validator(mode="after")
    def _window_inside_training(self) -> "ScoresParams":
        _check_window(self.score_epochs, self.recipe.epochs, "score_epochs")
        return self

    def window(self, kind: str, score: str) -> tuple[int, int]:
        """The epochs (1-based, inclusive) whose outputs `score` averages for a `kind` model: seen models use
        `seen_windows` (fractions of the scorer's training) where it names the score; every other model and score
        the scorer's own window (`score_epochs`, or `probe.score_epochs` for probes)."""
        epochs, window = (self.probe.epochs, self.probe.score_epochs) if self.scorer == "probe" else (self.recipe.epochs, self.score_epochs)
        if kind != "seen" or score not in self.seen_windows:
            return window
        return tuple(max(1, round(fraction * epochs)) for fraction in self.seen_windows[score])  # type: ignore[return-value]

    def recorded_window(self, kind: str) -> tuple[int, int]:
        """The epochs a `kind` model records: every window its scores use."""
        windows = [self.window(kind, name) for name in self.score_names]
        return min(first for first, _ in windows), max(last for _, last in windows)


class SelectParams(Section):
    method: str = Field("unseen", pattern=r"^[a-z][a-z0-9_]*$")
    prune_ratio: float = Field(0.5, gt=0, lt=1)
    score: str = "el2n_unseen"
    hard_cutoff: Cutoff | dict[Ratio, Cutoff] = "auto"  # auto: the label issues of select.score's variant; misclassified; a fraction; or a schedule
    label_issue_max_probability: Annotated[float, Field(gt=0, le=1)] | None = 0.1  # auto cuts a flagged sample only below this held-out probability of its label
    label_issue_min_rank: Annotated[int, Field(ge=2)] | None = None  # auto cuts a flagged sample only when its label ranks this low (label_rank)
    label_issues: Literal["cut", "stratum", "auto"] = "auto"  # UNSEEN with auto: cut the flagged samples, keep them as one more coverage stratum, or auto
    label_issue_rate: float = Field(0.05, gt=0, le=1)  # label_issues auto: a stratum under this share of the train split, cut above
    label_issues_by: Literal["cleanlab", "probability"] = "cleanlab"  # probability: with noisy labels, every sample under label_issue_max_probability, flagged or not
    importance_weight: float = Field(0.0, ge=0)
    alignment_weight: float = Field(1.0, ge=0)
    diversity_weight: float = Field(0.5, ge=0)
    adaptive: bool = True
    regions_per_class: int = Field(1, ge=1)
    difficulty_power: Power | dict[Ratio, Power] = 1.0
    density_power: float = Field(1.0, ge=0)
    fourier_features: int = Field(128, ge=8)
    coverage_strata: int = Field(50, ge=0)
    coverage_range: Literal["class", "dataset"] = "class"
    coverage_tilt: Tilt | Literal["prune_ratio"] | dict[Ratio, Tilt] = 0.0
    class_budgets: Literal["proportional", "difficulty", "coverage"] = "difficulty"
    target_pool: Literal["none", "test"] = "none"
    steps: int = Field(3, ge=1)
    step_schedule: Literal["equal", "geometric"] = "equal"
    score_bins: int = Field(50, ge=1)

    @field_validator("score")
    @classmethod
    def _score_column(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]*_(unseen|seen)", value):
            raise ValueError(f"{value!r} is not a score column; use <score>_unseen or <score>_seen, e.g. el2n_unseen")
        return value

    @model_validator(mode="after")
    def _label_issue_stratum_needs_strata(self) -> "SelectParams":
        if self.label_issues == "stratum" and self.method == "unseen" and not self.coverage_strata:
            raise ValueError("select.label_issues 'stratum' keeps the label issues as one more coverage stratum: set select.coverage_strata > 0, or label_issues: cut")
        return self

    @property
    def selection_steps(self) -> int:
        """How many steps the select stage takes: `steps` for UNSEEN; the baselines select in one pass."""
        return self.steps if self.method == "unseen" else 1

    @property
    def tilt(self) -> float:
        """`coverage_tilt` at this prune ratio: a number, the prune ratio itself, or a schedule's entry (0 below all)."""
        return at_prune_ratio(self.prune_ratio if self.coverage_tilt == "prune_ratio" else self.coverage_tilt, self.prune_ratio, 0.0)

    @property
    def power(self) -> float:
        """`difficulty_power` at this prune ratio: a number, or a schedule's entry as for `tilt` (1 below all of them)."""
        return at_prune_ratio(self.difficulty_power, self.prune_ratio, 1.0)

    @property
    def cutoff(self) -> float | FlagCut:
        """`hard_cutoff` at this prune ratio: a fraction, auto, misclassified, or a schedule's entry as for `tilt` (auto
        below all)."""
        return at_prune_ratio(self.hard_cutoff, self.prune_ratio, "auto")

    @property
    def score_name(self) -> str:
        """The score behind `score`, without its variant: `el2n_unseen` -> `el2n`."""
        return self.score.rpartition("_")[0]


class RetrainParams(Section):
    recipe: TrainRecipe = TrainRecipe(epochs=10)
    batch_size_eval: int = Field(1024, ge=1)


class Params(Section):
    seed: int = Field(0, ge=0, le=4_000_000)  # fold and model seeds derive from seed * 1000 and must stay below 2**32
    outputs: str = "outputs"
    data: DataParams = DataParams()
    features: FeaturesParams = FeaturesParams()
    scores: ScoresParams = ScoresParams()
    increment: IncrementParams = IncrementParams()
    select: SelectParams = SelectParams()
    retrain: RetrainParams = RetrainParams()
    orchestration: OrchestrationParams = OrchestrationParams()
    tracking: TrackingParams = TrackingParams()

    @model_validator(mode="after")
    def _selection_score_is_computed(self) -> "Params":
        stem, _, variant = self.select.score.rpartition("_")
        if stem not in self.scores.score_names:
            raise ValueError(f"select.score {self.select.score!r}: {stem!r} is not in scores.scores {list(self.scores.score_names)}")
        if variant == "seen" and not self.scores.seen:
            raise ValueError(f"select.score {self.select.score!r} needs scores.seen: true")
        select = self.select
        auto, misclassified = select.cutoff in LABEL_ISSUE_CUTS, select.cutoff in ("misclassified", *OVERSAMPLED_CUTS)
        for needed, score, what, instead in (
            (auto, "label_issue", f"select.hard_cutoff {select.cutoff!r} cuts the samples that label_issue flags", "set select.hard_cutoff to a fraction (0 cuts nothing)"),
            (misclassified, "margin", f"select.hard_cutoff {select.cutoff!r} cuts the samples whose held-out margin is negative", "set select.hard_cutoff to auto or a fraction"),
            (auto and select.label_issue_max_probability is not None, "loss", "select.label_issue_max_probability reads the held-out probability of the label from the loss score", "set select.label_issue_max_probability to null (every flagged sample cut)"),
            (auto and select.label_issue_min_rank is not None, "label_rank", "select.label_issue_min_rank reads the rank of the label from the label_rank score", "set select.label_issue_min_rank to null (any rank cut)"),
        ):
            if needed and score not in self.scores.score_names:
                raise ValueError(f"{what}: add {score} to scores.scores, or {instead}")
        return self

    def output(self, *parts: str) -> Path:
        """A path under the outputs folder."""
        return Path(self.outputs, *parts)

    def section_hash(self, *sections: str, without: tuple[str, ...] = ()) -> str:
        """Short hash of the named top-level sections, less the `without` keys ('section.key'): what an output depends on."""
        dumped = self.model_dump(mode="json")
        for dotted in without:
            section, key = dotted.split(".")
            dumped[section].pop(key)
        payload = json.dumps({name: dumped[name] for name in sorted(sections)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def stage_hash(self, stage: str) -> str:
        """The params hash of one stage's outputs (stamped in its tables, checked by the stages that read them)."""
        return self.section_hash(*STAGE_PARAMS[stage])

    def recipe_hash(self, stage: str = "scores") -> str:
        """A stage's params hash without how much data there is (`data.train_first`) or the increment policy: scoring
        models (and a coreset) made under the same recipe serve a grown collection."""
        return self.section_hash(*(name for name in STAGE_PARAMS[stage] if name != "increment"), without=("data.train_first",))

    def run_hash(self) -> str:
        """The params hash of a whole run: every section any stage depends on (run reports, benchmark cells)."""
        return self.section_hash(*sorted({section for sections in STAGE_PARAMS.values() for section in sections}))
