"""Every bad input the pipeline refuses, one row each: `unseen run` or `unseen stage NAME` exits 2 with a message that
names the file, field or sample and says what to do, and not one file appears (no outputs, no MLflow store, no lock).

Each row sets up a working folder (tiny params, Fashion-MNIST, or small data sets written in the official formats,
or input tables) and runs the real command line in this process; the checks run before Prefect starts, so a row
takes a fraction of a second. docs/reliability.md lists these rows.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import unseen.data
from tests.conftest import tiny_params, write_params
from tests.test_data import cifar_arrays, fashion_arrays, write_cifar, write_fashion_raw, write_fashion_system_dir, write_image_folder, write_png
from flows.cli import app
from unseen.config import STAGE_PARAMS, load_params
from unseen.data import place_system_fashion_mnist
from unseen.tables import CORESET, FEATURES, SCORES, write_table


@dataclass
class Folder:
    """A case's working folder: its params (a dict until written) and the files it holds."""

    root: Path
    params: dict
    system_dir: Path  # stands in for /usr/share/datasets/fashion-mnist
    args: tuple[str, ...] = ()

    @property
    def params_file(self) -> Path:
        return self.root / "params.yaml"

    @property
    def outputs(self) -> Path:
        return Path(self.params["outputs"])

    def data(self, name: str, subfolder: str = "data", **settings) -> Path:
        """Point data.* at a fresh folder of this case (download off)."""
        root = self.root / subfolder
        self.params["data"] = {"name": name, "root": str(root), "download": False, **settings}
        return root

    def write_inputs(self, *, features: dict | None = None, scores: dict | None = None, meta: dict | None = None) -> None:
        """Valid features.parquet and scores.parquet for these params and data, with columns replaced as given."""
        from tasks.common import dataset_for

        params = load_params(write_params(self.params_file, self.params))
        dataset = dataset_for(params)
        train, test = dataset.train, dataset.test
        rng = np.random.default_rng(0)
        tables = {
            "features": (FEATURES, {
                "sample_id": np.concatenate([train.sample_ids, test.sample_ids]),
                "split": np.array(["train"] * len(train) + ["test"] * len(test)),
                "label": np.concatenate([train.labels.numpy(), test.labels.numpy()]),
                "embedding": rng.normal(size=(len(train) + len(test), 4)).astype(np.float32),
            }),
            "scores": (SCORES, {
                "sample_id": train.sample_ids,
                "label": train.labels.numpy(),
                "folds": np.zeros((len(train), 1), dtype=np.int16),
                "scored_by": np.full(len(train), "unseen_r0_f0"),
                "el2n_unseen": rng.random(len(train)).astype(np.float32),
            }),
        }
        changes = {"features": features or {}, "scores": scores or {}}
        for name, (spec, columns) in tables.items():
            columns = {**columns, **{key: change(columns) for key, change in changes[name].items()}}
            provenance = {"params_hash": params.section_hash(*STAGE_PARAMS[name]), "data_fingerprint": dataset.fingerprint}
            provenance.update((meta or {}).get(name, {}))
            write_table(spec, columns, self.outputs / f"{name}.parquet", **provenance)


def setting(section: str, **values) -> Callable[[Folder], None]:
    def apply(folder: Folder) -> None:
        folder.params[section] = {**folder.params.get(section, {}), **values}

    return apply


def nested(dotted: str, value) -> Callable[[Folder], None]:
    def apply(folder: Folder) -> None:
        *parents, leaf = dotted.split(".")
        node = folder.params
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    return apply


def args(*extra: str) -> Callable[[Folder], None]:
    def apply(folder: Folder) -> None:
        folder.args = extra

    return apply


# --------------------------------------------------------------------------- data set writers for the data rows


def fashion_truncated_idx(name: str) -> Callable[[Folder], None]:
    def apply(folder: Folder) -> None:
        path = write_fashion_raw(folder.data("fashion-mnist"), fashion_arrays()) / name
        path.write_bytes(path.read_bytes()[:-7])

    return apply


def fashion_truncated_gz(folder: Folder) -> None:
    folder.data("fashion-mnist")
    write_fashion_system_dir(folder.system_dir, fashion_arrays())
    damaged = folder.system_dir / "train-images-idx3-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:200])


def fashion_label_out_of_range(folder: Folder) -> None:
    arrays = fashion_arrays()
    arrays["train_labels"][7], arrays["train_labels"][11] = 12, 200
    write_fashion_raw(folder.data("fashion-mnist"), arrays)


def cifar_label_out_of_range(folder: Folder) -> None:
    arrays = cifar_arrays("cifar10", n_train_per_file=4, n_test=5)
    arrays["test"][1][3] = 10
    write_cifar(folder.data("cifar10", verify_checksums=False), "cifar10", arrays)


def cifar_garbage_batch(folder: Folder) -> None:
    base = write_cifar(folder.data("cifar10", verify_checksums=False), "cifar10", cifar_arrays("cifar10", n_train_per_file=4, n_test=4))
    (base / "data_batch_3").write_bytes(b"this is not a pickle")


def cifar_truncated_batch(folder: Folder) -> None:
    base = write_cifar(folder.data("cifar10", verify_checksums=False), "cifar10", cifar_arrays("cifar10", n_train_per_file=4, n_test=4))
    batch = base / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:100])


def cifar_checksum(name: str) -> Callable[[Folder], None]:
    def apply(folder: Folder) -> None:
        write_cifar(folder.data(name, verify_checksums=True), name, cifar_arrays(name, n_train_per_file=4, n_test=4))

    return apply


def cifar_small_subset(folder: Folder) -> None:
    arrays = cifar_arrays("cifar100", n_train_per_file=200, n_test=10)
    arrays["train"][0] = (arrays["train"][0][0], [k % 100 for k in range(200)])
    write_cifar(folder.data("cifar100", verify_checksums=False, train_subset=50), "cifar100", arrays)


def image_folder(layout: dict, damage: Callable[[Path], None] | None = None) -> Callable[[Folder], None]:
    def apply(folder: Folder) -> None:
        root = folder.data("imagefolder")
        write_image_folder(root, layout)
        if damage is not None:
            damage(root)

    return apply


TWO_CLASSES = {"train": {"ant": 10, "bee": 10}, "test": {"ant": 2, "bee": 2}}
ONE_CLASS = {"train": {"ant": 20}, "test": {"ant": 4}}


def manifest_case(edit: Callable[[list[tuple]], list[tuple]], *, classes: list[str] | None = None, header: str = "path,label,split,id",
                  missing: tuple | None = None, extra_label: str | None = None) -> Callable[[Folder], None]:
    """images/list.csv over 12 written PNGs (a0..a5 ant, b0..b5 bee; the last of each class is test); `edit` changes the
    rows, `missing` inserts a row for a file that is not there as row 3, `extra_label` relabels row 3."""
    def apply(folder: Folder) -> None:
        root = folder.data("manifest", subfolder="images", **({"classes": classes} if classes else {}))
        folder.params["data"]["root"] = str(root / "list.csv")
        rows = []
        for cls in ("ant", "bee"):
            for k in range(6):
                write_png(root / f"{cls[0]}{k}.png", np.full((8, 8, 3), 40 * k, dtype=np.uint8))
                rows.append((f"{cls[0]}{k}.png", cls, "test" if k == 5 else "train", str(len(rows))))
        if missing:
            rows.insert(2, (*missing, "99"))
        if extra_label:
            rows[2] = (rows[2][0], extra_label, *rows[2][2:])
        rows = edit(rows)
        width = len(header.split(","))
        (root / "list.csv").write_text(header + "\n" + "".join(",".join(row[:width]) + "\n" for row in rows))

    return apply


def broken_png(root: Path) -> None:
    (root / "train" / "bee" / "broken.png").write_bytes(b"\x00garbage, not a png\xff" * 4)


def empty_class(root: Path) -> None:
    (root / "test" / "cat").mkdir()
    (root / "train" / "cat").mkdir()


def bigger_image(root: Path) -> None:
    write_png(root / "train" / "ant" / "big.png", np.zeros((9, 8, 3), dtype=np.uint8))


# --------------------------------------------------------------------------- table writers for the table rows


def other_schema_version(folder: Folder) -> None:
    folder.write_inputs()
    path = folder.outputs / "scores.parquet"
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"unseen.schema_version": b"0"}), path)


def duplicate_rows(folder: Folder) -> None:
    folder.write_inputs()
    path = folder.outputs / "scores.parquet"
    table = pq.read_table(path)
    pq.write_table(pa.concat_tables([table, table.slice(5, 2)]), path)


def wrong_kind(folder: Folder) -> None:
    folder.write_inputs()
    (folder.outputs / "scores.parquet").replace(folder.outputs / "features.parquet")


def not_parquet(folder: Folder) -> None:
    folder.write_inputs()
    (folder.outputs / "features.parquet").write_bytes(b"PAR1 cut short")


def nan_rows(column: str, rows: list[int], value: float) -> Callable[[dict], np.ndarray]:
    def change(columns: dict) -> np.ndarray:
        values = columns[column].copy()
        values[rows] = value
        return values

    return change


def coreset_from_other_params(folder: Folder) -> None:
    from tasks.common import dataset_for

    params = load_params(write_params(folder.params_file, folder.params))
    train = dataset_for(params).train
    n = len(train)
    columns = {
        "sample_id": train.sample_ids, "label": train.labels.numpy(), "selected": np.arange(n) % 2 == 0,
        "random_selected": np.arange(n) % 2 == 1, "method": np.full(n, "unseen"), "step": np.ones(n, dtype=np.int16),
        "score": np.zeros(n, dtype=np.float32), "cut_as_hardest": np.zeros(n, dtype=bool), "region": np.zeros(n, dtype=np.int16),
        "region_budget": np.zeros(n, dtype=np.int32), "class_budget": np.zeros(n, dtype=np.int32),
        "selection_rank": np.zeros(n, dtype=np.int32), **{term: np.zeros(n, dtype=np.float32) for term in
                                                         ("importance_term", "alignment_term", "diversity_term", "class_mmd_after")},
    }
    write_table(CORESET, columns, folder.outputs / "coreset.parquet", params_hash="0123456789abcdef", data_fingerprint=dataset_for(params).fingerprint)


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    id: str
    command: tuple[str, ...]  # ("run",) or ("stage", NAME)
    setup: Callable[[Folder], None]
    expected: tuple[str, ...]  # fragments of the message; "{root}" and "{outputs}" are the case's folders


RUN, SELECT = ("run",), ("stage", "select")
CASES = [
    # params.yaml
    Case("unknown key", RUN, setting("select", prune_rato=0.5), ("params.yaml: invalid params", "select.prune_rato: unknown key")),
    Case("unknown section", RUN, nested("typo_section", {}), ("typo_section: unknown key",)),
    Case("unknown nested key", RUN, nested("scores.recipe.epoch", 3), ("scores.recipe.epoch: unknown key",)),
    Case("wrong type int", RUN, setting("scores", folds="two"), ("scores.folds: Input should be a valid integer",)),
    Case("wrong type bool", RUN, setting("data", download="maybe"), ("data.download: Input should be a valid boolean",)),
    Case("wrong type list", RUN, setting("select", prune_ratio=[0.5]), ("select.prune_ratio: Input should be a valid number",)),
    Case("prune_ratio 0", RUN, setting("select", prune_ratio=0), ("select.prune_ratio: Input should be greater than 0",)),
    Case("prune_ratio 1", RUN, setting("select", prune_ratio=1), ("select.prune_ratio: Input should be less than 1",)),
    Case("prune_ratio 1.5", RUN, setting("select", prune_ratio=1.5), ("select.prune_ratio: Input should be less than 1",)),
    Case("prune_ratio -0.1", RUN, setting("select", prune_ratio=-0.1), ("select.prune_ratio: Input should be greater than 0",)),
    Case("budget below class count", RUN, setting("select", prune_ratio=0.998),
         ("select.prune_ratio=0.998: the coreset would keep 4 of 2000 train samples, fewer than the 10 classes", "lower select.prune_ratio")),
    Case("one fold", RUN, setting("scores", folds=1), ("scores.folds: Input should be greater than or equal to 2",)),
    Case("more folds than smallest class", RUN, setting("scores", folds=201),
         ("scores.folds=201: class 'T-shirt/top' has only 200 train samples", "use at most 200 folds")),
    Case("empty score list", RUN, setting("scores", scores=[]), ("scores.scores: Value error, list at least one score",)),
    Case("unknown score", RUN, setting("scores", scores=["el2n", "el3n", "loss", "label_issue"]),
         ("scores.scores: unknown score 'el3n'; use one of el2n, grand, loss, entropy, margin, forgetting, aum",)),
    Case("score function not importable", RUN, setting("scores", scores=["el2n", "nowhere.module:fn", "loss", "label_issue"]), ("cannot import 'nowhere.module:fn'",)),
    Case("select.score not computed", RUN, lambda f: (setting("scores", scores=["el2n", "label_issue"])(f), setting("select", score="aum_unseen")(f)),
         ("select.score 'aum_unseen': 'aum' is not in scores.scores ['el2n', 'label_issue']",)),
    Case("unknown method", RUN, setting("select", method="topk"), ("select.method: unknown method 'topk'; use one of: unseen, random,",)),
    Case("unknown model", RUN, nested("scores.recipe.model", "vgg16"), ("scores.recipe.model: Input should be 'small_cnn', 'mlp' or 'resnet18'",)),
    Case("unknown data set", RUN, setting("data", name="mnist"),
         ("data.name: Input should be 'fashion-mnist', 'cifar10', 'cifar100', 'imagefolder' or 'manifest'",)),
    Case("unknown extractor", RUN, setting("features", extractor="resnet18"), ("features.extractor", "proxy, pixels, pretrained:<torchvision model name>")),
    Case("pretrained without a name", RUN, setting("features", extractor="pretrained:"), ("features.extractor: Value error, unknown extractor",)),
    Case("unknown pretrained model", RUN, setting("features", extractor="pretrained:resnet9000"),
         ("unknown torchvision model 'resnet9000'; choose one of:", "resnet18")),
    Case("not YAML", RUN, lambda f: f.params.__setitem__("__text__", "select: [unclosed"), ("params.yaml: not valid YAML",)),
    Case("top level not a mapping", RUN, lambda f: f.params.__setitem__("__text__", "- just\n- a list\n"),
         ("params.yaml: the top level must be a mapping of sections",)),
    Case("params file missing", RUN, lambda f: f.params.__setitem__("__text__", None), ("params.yaml: params file not found",)),
    Case("override without value", RUN, args("--set", "select.prune_ratio"), ("--set 'select.prune_ratio': expected KEY=VALUE",)),
    Case("override without key", RUN, args("--set", "=0.7"), ("--set '=0.7': expected KEY=VALUE",)),
    Case("override out of range", RUN, args("--set", "select.prune_ratio=1.5"), ("select.prune_ratio: Input should be less than 1",)),
    Case("brackets in a file name", RUN, args("--params", "exp[/old].yaml"), ("exp[/old].yaml: params file not found",)),  # not rich markup
    Case("override value not YAML", RUN, args("--set", "scores.score_epochs=[1,2"),
         ("--set 'scores.score_epochs=[1,2': the value is not valid YAML", "quote it or fix it")),
    Case("seed negative", RUN, nested("seed", -1), ("seed: Input should be greater than or equal to 0",)),
    Case("seed too large", RUN, nested("seed", 2**40), ("seed: Input should be less than or equal to 4000000",)),
    Case("weight not finite", RUN, setting("select", diversity_weight=float("inf")), ("select.diversity_weight: Input should be a finite number",)),
    Case("section given twice", RUN, lambda f: f.params.__setitem__("__text__", "select:\n  prune_ratio: 0.5\nselect:\n  prune_ratio: 0.7\n"),
         ("params.yaml: line 3: key 'select' is given twice; keep one",)),
    Case("empty params file", RUN, lambda f: f.params.__setitem__("__text__", ""), ("params.yaml: the file is empty",)),
    Case("select.score not a column", RUN, setting("select", score="el2n"),
         ("select.score: Value error, 'el2n' is not a score column; use <score>_unseen or <score>_seen, e.g. el2n_unseen",)),
    Case("auto cutoff without label issues", RUN, lambda f: (setting("scores", scores=["el2n"])(f), setting("select", hard_cutoff="auto")(f)),
         ("select.hard_cutoff 'auto' cuts the samples that label_issue flags: add label_issue to scores.scores", "or set select.hard_cutoff")),
    Case("misclassified cutoff without the margin score", RUN,
         lambda f: (setting("scores", scores=["el2n", "label_issue", "loss"])(f), setting("select", hard_cutoff="misclassified")(f)),
         ("select.hard_cutoff 'misclassified' cuts the samples whose held-out margin is negative: add margin to scores.scores",)),
    Case("oversampled cutoff without the margin score", RUN,
         lambda f: (setting("scores", scores=["el2n", "label_issue", "loss"])(f), setting("select", hard_cutoff="oversampled")(f)),
         ("select.hard_cutoff 'oversampled' cuts the samples whose held-out margin is negative: add margin to scores.scores",)),
    Case("noisy-labels oversampled cutoff without the margin score", RUN,
         lambda f: (setting("scores", scores=["el2n", "label_issue", "loss"])(f), setting("select", hard_cutoff={0.7: "oversampled_noisy"}, prune_ratio=0.7)(f)),
         ("select.hard_cutoff 'oversampled_noisy' cuts the samples whose held-out margin is negative: add margin to scores.scores",)),
    Case("label-issue probability without the loss score", RUN,
         lambda f: (setting("scores", scores=["el2n", "label_issue"])(f), setting("select", label_issue_max_probability=0.05)(f)),
         ("select.label_issue_max_probability reads the held-out probability of the label from the loss score: add loss to scores.scores",)),
    Case("label-issue rank without the label_rank score", RUN,
         lambda f: setting("select", label_issue_min_rank=3)(f),
         ("select.label_issue_min_rank reads the rank of the label from the label_rank score: add label_rank to scores.scores",)),
    Case("label issues as a stratum without strata", RUN, setting("select", label_issues="stratum", coverage_strata=0),
         ("select.label_issues 'stratum' keeps the label issues as one more coverage stratum: set select.coverage_strata > 0",)),
    Case("unknown stage", ("stage", "train"), lambda f: None, ("unknown stage 'train'; use one of: features, scores, select, retrain",)),
    Case("tracking server down", RUN, setting("tracking", uri="http://127.0.0.1:9"),
         ("tracking.uri=http://127.0.0.1:9: the MLflow tracking server does not answer", "Nothing was run")),
    Case("tracking store not a database", RUN,
         lambda f: ((f.root / "mlflow.db").write_text("not a database"), f.params["tracking"].__setitem__("uri", f"sqlite:///{f.root}/mlflow.db")),
         ("{root}/mlflow.db is not an SQLite database",)),
    Case("outputs is a file", RUN, lambda f: ((f.root / "outputs.txt").write_text("x"), f.params.__setitem__("outputs", str(f.root / "outputs.txt"))),
         ("{root}/outputs.txt is a file, not a folder",)),
    Case("data root is a file", RUN, lambda f: (f.data("fashion-mnist", subfolder="data.txt"), (f.root / "data.txt").write_text("x")),
         ("{root}/data.txt is a file, not a folder",)),
    Case("tracking folder missing", RUN, lambda f: f.params["tracking"].__setitem__("uri", f"sqlite:///{f.root}/no/such/mlflow.db"),
         ("{root}/no/such does not exist",)),
    # data
    Case("data folder missing", RUN, lambda f: f.data("fashion-mnist", subfolder="nowhere"), ("{root}/nowhere", "data.download=true")),
    Case("cifar10 files missing", ("stage", "features"), lambda f: f.data("cifar10", subfolder="nowhere"), ("{root}/nowhere", "data.download=true")),
    Case("cifar100 files missing", ("stage", "scores"), lambda f: f.data("cifar100", subfolder="nowhere"), ("{root}/nowhere", "data.download=true")),
    Case("truncated idx (images)", RUN, fashion_truncated_idx("train-images-idx3-ubyte"), ("fashion-mnist: cannot read the files under {root}/data", "fetch them again")),
    Case("truncated idx (labels)", RUN, fashion_truncated_idx("t10k-labels-idx1-ubyte"), ("fashion-mnist: cannot read the files under {root}/data",)),
    Case("truncated gz", RUN, fashion_truncated_gz, ("train-images-idx3-ubyte.gz is damaged", "reinstall it")),
    Case("cifar batch not a pickle", RUN, cifar_garbage_batch, ("cifar10: cannot read the files under {root}/data", "fetch them again")),
    Case("cifar batch truncated", RUN, cifar_truncated_batch, ("cifar10: cannot read the files under {root}/data",)),
    Case("cifar10 checksum differs", RUN, cifar_checksum("cifar10"), ("cifar10: no usable files under {root}/data",)),
    Case("cifar100 checksum differs", RUN, cifar_checksum("cifar100"), ("cifar100: no usable files under {root}/data",)),
    Case("subset smaller than class count", RUN, cifar_small_subset, ("data.train_subset=50: a stratified subset keeps at least one sample of each of the 100 classes; set it to 100 or more",)),
    Case("unreadable image", RUN, image_folder(TWO_CLASSES, broken_png), ("cannot read image {root}/data/train/bee/broken.png", "remove or replace it")),
    Case("empty class folder", RUN, image_folder(TWO_CLASSES, empty_class), ("{root}/data/train", "cat", "every class folder needs images")),
    Case("class lists differ", RUN, image_folder({"train": {"ant": 10, "bee": 10}, "test": {"ant": 2, "cat": 2}}),
         ("class folders differ between {root}/data/train (['ant', 'bee']) and {root}/data/test (['ant', 'cat'])",)),
    Case("test folder missing", RUN, image_folder({"train": {"ant": 10, "bee": 10}}), ("{root}/data/test does not exist",)),
    Case("train folder missing", RUN, image_folder({"test": {"ant": 10, "bee": 10}}), ("{root}/data/train does not exist",)),
    Case("images of two sizes", RUN, image_folder(TWO_CLASSES, bigger_image), ("differ in size", "set data.image_size")),
    Case("manifest file missing", RUN, manifest_case(lambda rows: rows, missing=("gone.png", "ant", "train")),
         ("manifest {root}/images/list.csv: row 3: {root}/images/gone.png does not exist", "fix the path or remove the row")),
    Case("manifest duplicate ids", RUN, manifest_case(lambda rows: [(*row[:3], "7" if i in (1, 4) else str(i)) for i, row in enumerate(rows)]),
         ("manifest {root}/images/list.csv: rows 2 and 5 share the id '7'", "ids must be unique")),
    Case("manifest label not in the class list", RUN, manifest_case(lambda rows: rows, classes=["ant", "bee"], extra_label="wasp"),
         ("manifest {root}/images/list.csv: row 3 has label 'wasp', not in the class list ['ant', 'bee']", "data.classes")),
    Case("manifest same file twice", RUN, manifest_case(lambda rows: rows + [rows[0]]), ("rows 1 and 13 list the same file 'a0.png'", "keep one")),
    Case("manifest without a label column", RUN, manifest_case(lambda rows: rows, header="path,split"), ("needs a 'path' and a 'label' column",)),
    Case("one class", RUN, image_folder(ONE_CLASS), ("imagefolder: the train split holds one class ('ant')", "at least two classes")),
    Case("label out of range (idx)", RUN, fashion_label_out_of_range, ("2 train labels outside 0..9, first at sample_id 7",)),
    Case("label out of range (cifar)", RUN, cifar_label_out_of_range, ("1 test labels outside 0..9, first at sample_id 3",)),
    # tables
    Case("input table missing", SELECT, lambda f: None, ("{outputs}/features.parquet: table not found; run `unseen stage features`",)),
    Case("probe scorer without features", ("stage", "scores"), setting("scores", scorer="probe"),
         ("{outputs}/features.parquet: table not found; run `unseen stage features`",)),
    Case("wrong kind of table", SELECT, wrong_kind, ("{outputs}/features.parquet: this is a 'scores' table, expected 'features'",)),
    Case("not a Parquet file", SELECT, not_parquet, ("{outputs}/features.parquet: not a readable Parquet file", "delete it and rerun `unseen stage features`")),
    Case("other schema version", SELECT, other_schema_version,
         ("{outputs}/scores.parquet: schema version '0', this code reads version 2; rerun `unseen stage scores`",)),
    Case("other data (fingerprint)", SELECT, lambda f: f.write_inputs(meta={"features": {"data_fingerprint": "0123456789abcdef"}}),
         ("{outputs}/features.parquet: made from other data (fingerprint 0123456789abcdef", "rerun `unseen stage features`")),
    Case("other params (hash)", SELECT, lambda f: f.write_inputs(meta={"scores": {"params_hash": "0123456789abcdef"}}),
         ("{outputs}/scores.parquet: made with other params (hash 0123456789abcdef", "rerun `unseen stage scores`")),
    Case("coreset from other params", ("stage", "retrain"), coreset_from_other_params,
         ("{outputs}/coreset.parquet: made with other params", "rerun `unseen stage select`")),
    Case("duplicate sample_ids", SELECT, duplicate_rows, ("{outputs}/scores.parquet: 2 sample_ids occur more than once, first",)),
    Case("missing sample_ids", SELECT, lambda f: f.write_inputs(scores={key: (lambda c, key=key: c[key][3:]) for key in ("sample_id", "label", "folds", "scored_by", "el2n_unseen")}),
         ("{outputs}/scores.parquet: 3 sample_ids of the train split are missing, first",)),
    Case("NaN in features", SELECT, lambda f: f.write_inputs(features={"embedding": nan_rows("embedding", [4, 9, 30], np.nan)}),
         ("{outputs}/features.parquet: 3 rows of 'embedding' hold NaN or inf, first at sample_id",)),
    Case("inf in scores", SELECT, lambda f: f.write_inputs(scores={"el2n_unseen": nan_rows("el2n_unseen", [2, 8], np.inf)}),
         ("{outputs}/scores.parquet: 2 rows of 'el2n_unseen' hold NaN or inf, first at sample_id",)),
]


def snapshot(root: Path) -> dict[str, int]:
    """Every file under `root` with its modification time."""
    return {str(path.relative_to(root)): path.stat().st_mtime_ns for path in root.rglob("*") if path.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_refused_with_a_clear_message_and_nothing_written(case, tmp_path, fashion_root, monkeypatch):
    system_dir = tmp_path / "system-fashion-mnist"
    monkeypatch.setattr(unseen.data, "place_system_fashion_mnist", functools.partial(place_system_fashion_mnist, system_dir=system_dir))
    monkeypatch.chdir(tmp_path)
    folder = Folder(tmp_path, tiny_params(tmp_path, fashion_root), system_dir)
    case.setup(folder)
    if "__text__" not in folder.params:
        write_params(folder.params_file, folder.params)
    elif (text := folder.params.pop("__text__")) is not None:  # None: no params file at all
        folder.params_file.write_text(text)
    before = snapshot(tmp_path)

    result = CliRunner().invoke(app, [*case.command, "--params", str(folder.params_file), *folder.args])

    message = result.stderr
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert message.startswith("error: "), message
    for fragment in case.expected:
        fragment = fragment.format(root=tmp_path, outputs=folder.outputs)
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert snapshot(tmp_path) == before, "the refused run wrote or changed files"
    assert not re.search(r"Traceback", result.output)
