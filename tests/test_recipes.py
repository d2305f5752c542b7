"""mrsr.report.recipes: the recipe table rows the report prints, from weights sidecars."""

from __future__ import annotations

from mrsr.report.recipes import COLUMNS, describe, recipe_rows
from report_fixtures import sidecar


def test_one_row_per_method_with_per_scale_facts():
    rows = recipe_rows([sidecar("srcnn", 3, steps_per_epoch=110), sidecar("srcnn", 2),
                        sidecar("proposed", 2, "multi", optimizer="sgd", momentum=0.9, weight_decay=1e-4,
                                 schedule={"kind": "step", "warmup_epochs": 0, "lr_step_epochs": 20, "lr_gamma": 0.1},
                                 clip={"theta": 0.4, "adjustable": True}, source=None),
                        sidecar("srcnn", 4, steps_per_epoch=91), {"model": "espcn", "scale": 2}])  # no recipe: skipped
    assert [r["method"] for r in rows] == ["srcnn", "proposed/multi"]
    srcnn, proposed = rows
    assert set(COLUMNS) <= set(srcnn)
    assert srcnn["rates"] == "body 0.001, last 0.0001" and srcnn["optimizer"] == "Adam (weight decay 0)"
    assert srcnn["schedule"] == "cosine to 0.01 x lr" and srcnn["clipping"] == "none"
    assert srcnn["budget"] == "x2: 100 epochs x 110 steps x 128; x3: 100 epochs x 110 steps x 128; x4: 100 epochs x 91 steps x 128"
    assert sorted(srcnn["scales"]) == [2, 3, 4] and srcnn["scales"][2]["below_bicubic_on_validation"] is False
    assert srcnn["same_recipe"] is True
    assert proposed["optimizer"] == "SGD (momentum 0.9, weight decay 0.0001)"
    assert proposed["schedule"] == "x0.1 every 20 epochs" and proposed["clipping"] == "gradient norm <= 0.4 / lr (adjustable)"
    assert proposed["budget"] == "100 epochs x 110 steps x 128" and proposed["source"] == ""


def test_init_and_loss_texts():
    text = describe(sidecar("srcnn", 2, loss_reduction="sum",
                             init={"train": {"all": "gaussian"}, "std": 0.001, "model_options": {}})["recipe"])
    assert text["init"] == "He; then all: gaussian (std 0.001)"
    assert text["loss"].startswith("1/2 MSE summed over each patch's pixels")
    text = describe(sidecar("proposed", 2, init={"train": {"all": "default"}, "std": None, "model_options": {
        "image_deconv_init": "bicubic", "feature_deconv_init": "zero"}})["recipe"])
    assert text["init"] == "He, image_deconv_init=bicubic, feature_deconv_init=zero"


def test_different_recipes_across_scales_are_flagged():
    rows = recipe_rows([sidecar("espcn", 2), sidecar("espcn", 3, optimizer="sgd", momentum=0.9)])
    assert rows[0]["same_recipe"] is False
