"""Training recipes as table rows: what each method was trained with, for the report.

Pure functions over weights sidecars (``models/<profile>/<job>.json``, written by :mod:`mrsr.train`):
each sidecar's ``recipe`` (optimiser, rates per parameter group, loss reduction, initialisation,
schedule, budget, clipping, source) and the validation facts beside it (``initial_val_psnr``,
``final_val_psnr``, ``bicubic_val_psnr``: PSNR on the held-out training-series slices at the start
and the end of training, and of bicubic on the same slices). No I/O, no torch: the caller reads
the JSON files.

    rows = recipe_rows(json.loads(p.read_text()) for p in Path("models/quick").glob("*.json"))

One row per method (model and strategy); the scales that share a recipe share the row, and the
per-scale facts are in ``scales``. docs/models.md ("Training recipes") says where each comes from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

#: The columns of :func:`recipe_rows`' rows that are text for a table (in this order).
COLUMNS = ("method", "optimizer", "rates", "loss", "init", "schedule", "budget", "clipping", "source")


def _number(value: float) -> str:
    return f"{value:g}"


def describe(recipe: Mapping[str, Any]) -> dict[str, str]:
    """One sidecar ``recipe`` as short strings: optimizer, rates, loss, init, schedule, budget, clipping,
    source (the columns of :data:`COLUMNS` but ``method``)."""
    if recipe["optimizer"] == "sgd":
        optimizer = f"SGD (momentum {_number(recipe['momentum'])}, weight decay {_number(recipe['weight_decay'])})"
    else:
        optimizer = f"Adam (weight decay {_number(recipe['weight_decay'])})"
    rates = ", ".join(f"{name} {_number(group['lr'])}" for name, group in recipe["groups"].items())
    loss = ("1/2 MSE summed over each patch's pixels, mean over the batch" if recipe["loss_reduction"] == "sum"
            else "1/2 MSE, mean over pixels and batch")
    init = recipe["init"]
    # The model's own initialisation (He, with its model.<name> *_init options), then train.init.
    init_text = "He" + "".join(f", {k}={v}" for k, v in init.get("model_options", {}).items())
    overrides = [f"{group}: {scheme}" + (f" (std {_number(init['std'])})" if scheme == "gaussian" else "")
                 for group, scheme in init["train"].items() if scheme != "default"]
    if overrides:
        init_text += "; then " + ", ".join(overrides)
    sched = recipe["schedule"]
    if sched["kind"] == "step":
        schedule = f"x{_number(sched['lr_gamma'])} every {sched['lr_step_epochs']} epochs"
        if sched["lr_step_epochs"] >= recipe["epochs"]:
            schedule = "constant"
    else:
        schedule = f"cosine to {_number(sched['lr_min_ratio'])} x lr"
    if sched.get("warmup_epochs"):
        schedule += f", {sched['warmup_epochs']} epoch(s) linear warm-up"
    clip = recipe.get("clip")
    clipping = ("none" if clip is None else
                f"gradient norm <= {_number(clip['theta'])} / lr (adjustable)" if clip["adjustable"] else
                f"gradient norm <= {_number(clip['theta'])}")
    budget = f"{recipe['epochs']} epochs x {recipe['steps_per_epoch']} steps x {recipe['batch_size']}"
    return {"optimizer": optimizer, "rates": rates, "loss": loss, "init": init_text, "schedule": schedule,
            "budget": budget, "clipping": clipping, "source": recipe.get("source") or ""}


def recipe_rows(sidecars: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the recipe table, one per method, in the order the methods first appear.

    Args:
        sidecars: weights sidecar dicts (``model``, ``strategy``, ``scale``, ``recipe``, and the
            ``*_val_psnr`` facts). Sidecars without a ``recipe`` (older weights) are skipped.

    Returns:
        dicts with the :data:`COLUMNS` as strings (``budget`` joins the scales' budgets when they
        differ, e.g. the steps of an epoch), and ``scales``: {scale: {"initial_val_psnr",
        "final_val_psnr", "bicubic_val_psnr", "below_bicubic_on_validation"}}, and ``same_recipe``:
        False when scales of one method were trained with different recipes (then the texts are
        the first scale's, and the budgets of all).
    """
    rows: dict[str, dict[str, Any]] = {}
    for meta in sorted(sidecars, key=lambda m: (m.get("scale") or 0)):
        recipe = meta.get("recipe")
        if not recipe:
            continue
        method = meta["model"] + (f"/{meta['strategy']}" if meta.get("strategy") else "")
        text = describe(recipe)
        row = rows.get(method)
        if row is None:
            row = rows[method] = {"method": method, **text, "budgets": {}, "scales": {}, "same_recipe": True}
        elif any(row[k] != v for k, v in text.items() if k != "budget"):
            row["same_recipe"] = False
        row["budgets"][meta["scale"]] = text["budget"]
        final, bicubic = meta.get("final_val_psnr"), meta.get("bicubic_val_psnr")
        row["scales"][meta["scale"]] = {
            "initial_val_psnr": meta.get("initial_val_psnr"), "final_val_psnr": final, "bicubic_val_psnr": bicubic,
            "below_bicubic_on_validation": (final < bicubic) if final is not None and bicubic is not None else None,
        }
    for row in rows.values():
        budgets = row.pop("budgets")
        distinct = list(dict.fromkeys(budgets.values()))
        row["budget"] = distinct[0] if len(distinct) == 1 else "; ".join(f"x{s}: {b}" for s, b in budgets.items())
    return list(rows.values())
