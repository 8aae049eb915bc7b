"""Feature extractors: proxy, pixels and pretrained torchvision models (weights from torch's cache, never the network)."""

import urllib.error

import numpy as np
import pytest
import torch
from torchvision import models as tv_models

from unseen.config import DataParams, FeaturesParams, TrainRecipe
from unseen.data import load_dataset
from unseen.features import FeatureError, extract_features, load_pretrained, noisy_label_share, proxy_epochs_at_most, proxy_recipe


@pytest.fixture(scope="module")
def tiny(fashion_root):
    return load_dataset(DataParams(root=str(fashion_root), download=False, train_subset=200, test_subset=50))


def test_proxy_features_are_penultimate_embeddings(tiny):
    params = FeaturesParams(extractor="proxy", proxy=TrainRecipe(epochs=1))
    train, test = extract_features(tiny, params, seed=0, device=torch.device("cpu"))
    assert train.shape == (200, 128) and test.shape == (50, 128)
    assert train.dtype == np.float32 and np.isfinite(train).all() and train.std() > 0


def test_proxy_fraction_trains_on_a_stratified_seeded_share_and_embeds_every_sample(tiny, monkeypatch):
    import unseen.features

    trained_on = []
    real = unseen.features.train_model
    monkeypatch.setattr(unseen.features, "train_model", lambda dataset, split, *a, **k: trained_on.append(split) or real(dataset, split, *a, **k))
    params = FeaturesParams(extractor="proxy", proxy=TrainRecipe(epochs=1), proxy_fraction=0.5)
    train, test = extract_features(tiny, params, seed=0, device=torch.device("cpu"))
    extract_features(tiny, params, seed=0, device=torch.device("cpu"))
    first, again = trained_on
    assert len(first) == 100 and np.array_equal(first.sample_ids, again.sample_ids)  # the same share for a seed
    assert np.bincount(first.labels.numpy()).tolist() == (np.bincount(tiny.train.labels.numpy()) // 2).tolist()
    assert set(first.sample_ids) < set(tiny.train.sample_ids)
    assert train.shape == (200, 128) and test.shape == (50, 128) and np.isfinite(train).all()


@pytest.mark.parametrize(
    ("train_size", "fraction", "min_steps", "epochs"),
    [(60000, 1.0, 150, 1), (8000, 1.0, 150, 3), (8000, 1.0, 0, 1), (8000, 0.5, 150, 5), (1437, 1.0, 150, 13), (100, 1.0, 150, 150)],
)
def test_proxy_trains_at_least_min_steps_in_whole_epochs(train_size, fraction, min_steps, epochs):
    params = FeaturesParams(proxy=TrainRecipe(epochs=1, batch_size=128), proxy_fraction=fraction, proxy_min_steps=min_steps)
    assert proxy_recipe(params, train_size).epochs == epochs  # 469, 63, 63, 32, 12 and 1 steps an epoch
    assert proxy_recipe(params.model_copy(update={"proxy": TrainRecipe(epochs=4)}), 60000).epochs == 4  # never fewer than proxy.epochs


def test_proxy_of_a_small_split_trains_the_epochs_its_recipe_says(tiny, monkeypatch):
    import unseen.features

    recipes = []
    real = unseen.features.train_model
    monkeypatch.setattr(unseen.features, "train_model", lambda dataset, split, recipe, **k: recipes.append(recipe) or real(dataset, split, recipe, **k))
    extract_features(tiny, FeaturesParams(proxy=TrainRecipe(epochs=1, batch_size=128), proxy_min_steps=5), seed=0, device=torch.device("cpu"))
    assert [recipe.epochs for recipe in recipes] == [3]  # 200 samples: 2 steps an epoch


def test_noisy_label_share_counts_the_second_half_of_the_first_epoch_under_the_probability_limit():
    params = FeaturesParams(proxy_noisy_probability=0.1)
    first_epoch = np.array([0.01, 0.01, 0.01, 0.01, 0.05, 0.5, 0.9, 0.09])  # the first half, an untrained model's, is left out
    assert noisy_label_share(first_epoch, params) == 0.5
    assert noisy_label_share(np.array([], dtype=np.float32), params) == 0.0


def test_proxy_trains_anew_for_noisy_epochs_only_where_its_first_epoch_finds_noisy_labels(tiny, monkeypatch):
    import unseen.features

    recipes = []
    real = unseen.features.train_model
    monkeypatch.setattr(unseen.features, "train_model", lambda dataset, split, recipe, **k: recipes.append(recipe.epochs) or real(dataset, split, recipe, **k))
    base = FeaturesParams(proxy=TrainRecipe(epochs=1))
    once, _ = extract_features(tiny, base, seed=0, device=torch.device("cpu"))
    curated, _ = extract_features(tiny, base.model_copy(update={"proxy_noisy_epochs": 3, "proxy_noisy_share": 1.0}), seed=0, device=torch.device("cpu"))
    noisy, _ = extract_features(tiny, base.model_copy(update={"proxy_noisy_epochs": 3, "proxy_noisy_share": 1e-6}), seed=0, device=torch.device("cpu"))
    already_long = FeaturesParams(proxy=TrainRecipe(epochs=3), proxy_noisy_epochs=3, proxy_noisy_share=1e-6)
    extract_features(tiny, already_long, seed=0, device=torch.device("cpu"))
    assert recipes == [1, 1, 1, 3, 3]  # a proxy already as long as proxy_noisy_epochs trains once
    assert proxy_epochs_at_most(already_long, 200) == 3 and proxy_epochs_at_most(base.model_copy(update={"proxy_noisy_epochs": 3}), 200) == 4
    np.testing.assert_array_equal(once, curated)  # recording the first epoch changes nothing
    assert not np.array_equal(once, noisy)


def test_pixel_features_are_pca_of_the_train_split(tiny):
    train, test = extract_features(tiny, FeaturesParams(extractor="pixels", pca_components=16), seed=0)
    assert train.shape == (200, 16) and test.shape == (50, 16)
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-4)  # PCA centres on the train split
    assert train[:, 0].var() >= train[:, 15].var()  # components ordered by explained variance


def test_pretrained_features_use_cached_weights(tiny, tmp_path, monkeypatch):
    """Weights placed in torch's cache (as a download would leave them) are used without any network access."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = tv_models.get_model_weights("resnet18").DEFAULT
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(tv_models.get_model("resnet18").state_dict(), cache / weights.url.rsplit("/", 1)[1])
    small = type(tiny)(tiny.name, tiny.classes, tiny.train.take(np.arange(6)), tiny.test.take(np.arange(3)), tiny.mean, tiny.std, "x")
    train, test = extract_features(small, FeaturesParams(extractor="pretrained:resnet18", batch_size=4), seed=0, device=torch.device("cpu"))
    assert train.shape == (6, 512) and test.shape == (3, 512)


def test_pretrained_weights_that_cannot_be_had_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(FeatureError, match=r"resnet18.*cannot get the weights.*hub/checkpoints/resnet18-"):
        load_pretrained("resnet18")


def test_unknown_torchvision_model_lists_the_valid_ones():
    with pytest.raises(FeatureError, match="unknown torchvision model 'no_such_net'.*resnet18"):
        load_pretrained("no_such_net")


def test_missing_pretrained_weights_are_refused_before_any_run(tmp_path, monkeypatch):
    """The preflight loads the weights: without them a run stops in one line, before any training or MLflow run."""
    from unseen.checks import check_params
    from unseen.config import ParamsError, Params

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: (_ for _ in ()).throw(urllib.error.URLError("no network")))
    params = Params(outputs=str(tmp_path / "outputs"), features=FeaturesParams(extractor="pretrained:resnet18"))
    with pytest.raises(ParamsError, match=r"pretrained:resnet18: cannot get the weights"):
        check_params(params)
    assert not (tmp_path / "outputs").exists()


def test_features_table_is_read_once_while_unchanged(tiny, tmp_path):
    from unseen.config import Params
    from unseen.features import features_columns, read_features
    from unseen.tables import FEATURES, write_table

    params = Params(outputs=str(tmp_path))
    rng = np.random.default_rng(0)
    train, test = (rng.normal(size=(len(split), 4)).astype(np.float32) for split in (tiny.train, tiny.test))

    def write(train_rows: np.ndarray) -> None:
        write_table(FEATURES, features_columns(tiny, train_rows, test), params.output("features.parquet"),
                    params_hash=params.stage_hash("features"), data_fingerprint=tiny.fingerprint)

    write(train)
    first = read_features(params, tiny)
    assert read_features(params, tiny)[1] is first[1]  # the fold, step and select tasks of one run share one read
    write(train + 1)  # rewritten (renamed into place): read again
    np.testing.assert_array_equal(read_features(params, tiny)[1], train + 1)
