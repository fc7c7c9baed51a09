"""Model cards from the store's files: sections, change log against the previous version."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from integration.bento_fixtures import churn_metrics

from service.config import Settings
from service.registry import cards as model_cards
from service.registry.bentos import stored_bento


def test_the_card_has_every_section_and_the_change_log(
    settings: Settings, store_files: Callable[..., Path]
) -> None:
    store_files("churn:v1", churn_metrics(0.66, 0.154))
    weak = churn_metrics(0.77, 0.12)
    weak["by_region"]["apac"] = {**weak["by_region"]["apac"], "auc": 0.70}
    store_files("churn:v2", weak, kind="gradient_boosting", params={"max_depth": 4})
    card = model_cards.read_card("churn:v2", settings)
    for title in (
        "Intended use",
        "Training data",
        "Model",
        "Offline metrics",
        "Known limitations",
        "Change log",
    ):
        assert f"## {title}" in card
    assert "Rank users by churn risk" in card  # from versions.yaml `card.intended_use`
    assert "| segment=smb | 0.7700 |" in card
    assert "weaker on region=apac: AUC 0.700 vs 0.770 overall" in card
    assert "- against churn:v1:" in card
    assert "kind: `logistic_regression` -> `gradient_boosting`" in card
    assert "auc: 0.6600 -> 0.7700 (+0.1100)" in card
    assert "snapshot snap-v1 -> snap-v2" in card


def test_the_first_version_says_so_and_cards_are_stored_with_the_bento(
    settings: Settings, store_files: Callable[..., Path]
) -> None:
    folder = store_files("churn:v1")
    path = model_cards.write_card("churn:v1", settings)
    assert path == folder / "rollout" / "card.md"
    assert {p.name for p in (folder / "rollout").iterdir()} == set(model_cards.CARD_FILES)
    assert "- first version of the family" in path.read_text()


def test_html_escapes_every_value(settings: Settings, store_files: Callable[..., Path]) -> None:
    store_files("churn:v1", change="<script>alert(1)</script>")
    bento = stored_bento("churn:v1", settings)
    page = model_cards.render_html(bento, model_cards.card_sections(bento, settings))
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.startswith("<!doctype html>") and "<table>" in page
