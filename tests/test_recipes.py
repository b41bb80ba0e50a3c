"""experiments/recipes.py: runs trained on different versions of the data are never mixed."""

from __future__ import annotations

import pytest
from conftest import load_experiment


@pytest.fixture(scope="module")
def recipes():
    return load_experiment("recipes")


def test_the_default_and_the_baselines_have_three_seeds_on_the_current_data(recipes):
    # The README's and notebook 04's figures for the default come from these runs: changing data/sentences.csv
    # without re-running them fails here.
    current = recipes.load_records(recipes.data_version()["sha256"])
    for name in [recipes.default_recipe(), *recipes.BASELINES]:
        assert sorted(r["seed"] for r in current if r["recipe"] == name) == list(recipes.SEEDS), name


def test_each_data_version_gets_its_own_tables(recipes):
    records = recipes.load_records()
    versions = {r["data"]["sha256"] for r in records}
    current = recipes.data_version()["sha256"]
    assert all(r["data"]["sha256"] == current for r in recipes.load_records(current))
    text = recipes.markdown_tables(records)
    assert text.count("## Trained on ") == len(versions)
    assert text.startswith("## Trained on the current")
    assert recipes.result_path("LP-FT", 0).name == f"lp-ft-seed0-data-{current[:8]}.json"
