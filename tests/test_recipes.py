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


def test_the_readme_shows_the_runs_on_the_current_data(recipes):
    # README.md's result tables are written from the records (python experiments/recipes.py --readme): a table
    # pasted by hand, or records changed without rewriting it, fails here.
    begin, end = recipes.README_MARKERS
    text = recipes.README.read_text()
    assert text.count(begin) == text.count(end) == 1
    shown = text.split(begin)[1].split(end)[0].strip()
    assert shown == recipes.readme_tables().strip()
