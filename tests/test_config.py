"""unseen.config: params files and --set overrides are read into one validated Params, or refused with a ParamsError
that names the dotted key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from unseen.config import Params, ParamsError, load_params

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, tree: dict | str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(tree if isinstance(tree, str) else yaml.safe_dump(tree))
    return path


def assert_names_key(message: str, dotted: str) -> None:
    """The message has a line `  <dotted>: ...` (so `select.prune_ratio` is not matched by `select.prune_ratio_x`)."""
    assert re.search(rf"^\s*{re.escape(dotted)}:", message, flags=re.MULTILINE), message


# --------------------------------------------------------------------------- the committed file


def test_committed_params_yaml_loads_every_value():
    """The committed params.yaml validates, and every value written in it reaches Params unchanged."""
    path = REPO / "params.yaml"
    tree = yaml.safe_load(path.read_text())
    loaded = load_params(path)

    assert tree["select"]["prune_ratio"] == 0.5
    assert loaded.select.prune_ratio == tree["select"]["prune_ratio"]

    dumped = loaded.model_dump(mode="python")

    def compare(written: dict, got: dict, where: str) -> None:
        for key, value in written.items():
            if isinstance(value, dict):
                compare(value, got[key], f"{where}{key}.")
            else:
                assert (list(got[key]) if isinstance(got[key], tuple) else got[key]) == value, f"{where}{key}"

    compare(tree, dumped, "")


def test_an_empty_mapping_gives_the_defaults_and_an_empty_file_is_refused(tmp_path):
    """`{}` is all defaults; an empty file is more likely a mistake than a wish for the full default run."""
    assert load_params(write(tmp_path, "{}")) == Params()
    with pytest.raises(ParamsError, match="the file is empty"):
        load_params(write(tmp_path, ""))


# --------------------------------------------------------------------------- values that are accepted (refusals: tests/test_bad_input.py)


@pytest.mark.parametrize("ratio", [0.01, 0.5, 0.99])
def test_prune_ratio_inside_the_range_is_accepted(tmp_path, ratio):
    assert load_params(write(tmp_path, {"select": {"prune_ratio": ratio}})).select.prune_ratio == ratio


@pytest.mark.parametrize(
    ("scoring", "ok"),
    [
        ({"recipe": {"epochs": 4}, "score_epochs": [1, 4]}, True),
        ({"recipe": {"epochs": 4}, "score_epochs": [3, 3]}, True),
        ({"recipe": {"epochs": 4}, "score_epochs": [0, 2]}, False),
        ({"recipe": {"epochs": 4}, "score_epochs": [1, 5]}, False),
        ({"recipe": {"epochs": 4}, "score_epochs": [3, 2]}, False),
        ({"recipe": {"epochs": 4}}, False),  # the default window (2, 10) does not fit 4 epochs
    ],
)
def test_score_window_must_lie_inside_training(tmp_path, scoring, ok):
    """score_epochs is a 1-based inclusive window with 1 <= first <= last <= recipe.epochs."""
    path = write(tmp_path, {"scores": scoring})
    if ok:
        assert list(load_params(path).scores.score_epochs) == scoring["score_epochs"]
    else:
        with pytest.raises(ParamsError, match="score_epochs"):
            load_params(path)


@pytest.mark.parametrize("extractor", ["proxy", "pixels", "pretrained:resnet18"])
def test_known_extractors_are_accepted(tmp_path, extractor):
    assert load_params(write(tmp_path, {"features": {"extractor": extractor}})).features.extractor == extractor


# --------------------------------------------------------------------------- --set overrides


@pytest.fixture
def base_file(tmp_path) -> Path:
    return write(tmp_path, {"select": {"prune_ratio": 0.5}, "scores": {"recipe": {"epochs": 4}, "score_epochs": [1, 4]}})


def test_override_float(base_file):
    """--set select.prune_ratio=0.7 replaces the file's 0.5 with the float 0.7."""
    loaded = load_params(base_file, ["select.prune_ratio=0.7"])
    assert isinstance(loaded.select.prune_ratio, float)
    assert loaded.select.prune_ratio == 0.7


def test_override_value_is_parsed_as_yaml_list(base_file):
    """--set scores.score_epochs=[1,2]: the value is YAML, so a list (a plain string would not validate)."""
    assert load_params(base_file, ["scores.score_epochs=[1,2]"]).scores.score_epochs == (1, 2)


def test_overrides_apply_in_order_and_create_sections(base_file):
    """Later overrides win, and a section absent from the file is created."""
    loaded = load_params(base_file, ["select.prune_ratio=0.6", "select.prune_ratio=0.8", "data.train_subset=200", " seed =3"])
    assert loaded.select.prune_ratio == 0.8
    assert loaded.data.train_subset == 200
    assert loaded.seed == 3


def test_override_does_not_touch_the_file(base_file):
    before = base_file.read_text()
    load_params(base_file, ["select.prune_ratio=0.7"])
    assert base_file.read_text() == before


def test_override_is_validated_like_the_file(base_file):
    """An override goes through the same validation: an out-of-range value or misspelt key is refused."""
    with pytest.raises(ParamsError) as info:
        load_params(base_file, ["select.prune_ratio=1.5"])
    assert_names_key(str(info.value), "select.prune_ratio")
    with pytest.raises(ParamsError) as info:
        load_params(base_file, ["select.prune_rato=0.7"])
    assert_names_key(str(info.value), "select.prune_rato")
    assert "unknown key" in str(info.value)


def test_override_below_a_value_is_refused(base_file):
    """prune_ratio is a value, not a section: --set select.prune_ratio.x=1 says so instead of crashing."""
    with pytest.raises(ParamsError, match="'prune_ratio' is a value"):
        load_params(base_file, ["select.prune_ratio.x=1"])
    with pytest.raises(ParamsError) as info:  # seed is not in the file: refused by validation, still named
        load_params(base_file, ["seed.x=1"])
    assert_names_key(str(info.value), "seed")


# --------------------------------------------------------------------------- section_hash


def test_section_hash_tracks_only_the_named_sections(base_file):
    """A stage's cache key changes with its own sections only: prune_ratio moves the select hash, not the scoring one."""
    a = load_params(base_file)
    b = load_params(base_file, ["select.prune_ratio=0.7"])

    assert a.section_hash("select") != b.section_hash("select")
    assert a.section_hash("seed", "data", "select") != b.section_hash("seed", "data", "select")
    assert a.section_hash("scores") == b.section_hash("scores")
    assert a.section_hash("seed", "data", "scores") == b.section_hash("seed", "data", "scores")


def test_section_hash_is_stable_and_order_free(base_file):
    """Equal params hash equally across loads, whatever order the sections are named in."""
    a, b = load_params(base_file), load_params(base_file)
    assert a.section_hash("data", "select") == b.section_hash("select", "data")
    assert re.fullmatch(r"[0-9a-f]{16}", a.section_hash("select"))
    assert a.section_hash("select") != a.section_hash("scores")
