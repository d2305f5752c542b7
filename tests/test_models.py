"""Every registered model: output geometry, parameter counts (against docs/models.md), registry
refusals, one training step, and the proposed model's folded forward."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mrsr.config import trainable
from mrsr.data.resize import downscale, torch_upscale
from mrsr.models import MODEL_REGISTRY, SuperResolver, build_model
from mrsr.models.base import GROUP_NAMES
from mrsr.models.blocks import bicubic_support_kernel
from mrsr.models.decnn import DeCNN

DOCS = Path(__file__).resolve().parents[1] / "docs" / "models.md"

#: (name, scale, strategy) for every registered model, scale and strategy.
CONFIGS = [
    (name, scale, strategy)
    for name, spec in MODEL_REGISTRY.items()
    for scale in spec.scales
    for strategy in spec.strategies
]


#: whether each registered model has trainable parameters (bicubic has none).
TRAINABLE = {name: trainable(name) for name in MODEL_REGISTRY}

#: options that shrink the proposed net for the gradient-step test only (speed); its structure is kept.
SMALL_OPTIONS = {"proposed": {"features": 16, "units": 3}}


def _id(config: tuple[str, int, str | None]) -> str:
    name, scale, strategy = config
    return f"{name}-x{scale}" + (f"-{strategy}" if strategy else "")


def _key(name: str, strategy: str | None) -> str:
    """The model column of the docs table: ``name`` or ``name/strategy``."""
    return name if strategy is None else f"{name}/{strategy}"


def _documented_counts() -> dict[str, dict[int, int | None]]:
    """Parse the parameter table of docs/models.md: {model key: {scale: count or None}}."""
    counts: dict[str, dict[int, int | None]] = {}
    header: list[str] | None = None
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "model" and "x2" in cells and "published" in cells:
            header = cells
            continue
        if header is None or set(cells[0]) <= {"-"}:
            continue
        match = re.fullmatch(r"`([\w/]+)`", cells[0])
        assert match, f"unexpected model cell {cells[0]!r} in {DOCS}"
        row = {}
        for scale in (2, 3, 4):
            cell = cells[header.index(f"x{scale}")]
            row[scale] = None if cell == "-" else int(cell.replace(",", ""))
        counts[match.group(1)] = row
    assert counts, f"no parameter table found in {DOCS}"
    return counts


def _patch(scale: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth structured (1, 1, 24, 24) HR patch with values in [0, 1] and its bicubic LR."""
    yy, xx = np.mgrid[0:24, 0:24].astype(np.float64)
    hr = 0.5 + 0.25 * np.sin(0.45 * xx + 0.2 * yy) + 0.2 * np.cos(0.3 * yy - 0.1 * xx)
    hr += 0.05 * np.random.default_rng(0).standard_normal(hr.shape)
    lr = downscale(hr, scale)
    return torch.as_tensor(lr, dtype=dtype)[None, None], torch.as_tensor(hr, dtype=dtype)[None, None]


def _loss(model: torch.nn.Module, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    return sum(0.5 * torch.mean((y - hr) ** 2) for y in model.loss_outputs(lr))


@pytest.mark.parametrize("config", CONFIGS, ids=_id)
def test_full_image_output_is_scale_times_input(config: tuple[str, int, str | None]) -> None:
    name, scale, strategy = config
    torch.manual_seed(0)
    model = build_model(name, scale, strategy).eval()
    lr = torch.rand(1, 1, 13, 17)
    with torch.no_grad():
        out = model(lr)
    assert out.shape == (1, 1, 13 * scale, 17 * scale)
    assert torch.isfinite(out).all()


def test_parameter_counts_match_docs() -> None:
    documented = _documented_counts()
    for name, spec in MODEL_REGISTRY.items():
        for strategy in spec.strategies:
            key = _key(name, strategy)
            assert key in documented, f"{key} missing from the parameter table of {DOCS}"
            for scale in (2, 3, 4):
                expected = documented[key][scale]
                if scale not in spec.scales:
                    assert expected is None, f"{key} x{scale} is documented but not supported"
                    continue
                model = build_model(name, scale, strategy)
                count = sum(p.numel() for p in model.parameters())
                assert count == expected, f"{key} x{scale}: {count} parameters, docs say {expected}"


def test_registry_refuses_unknown_models_scales_and_strategies() -> None:
    with pytest.raises(KeyError):
        build_model("vdsr", 2)
    with pytest.raises(ValueError):
        build_model("fscwn", 3)
    with pytest.raises(ValueError):
        build_model("fscwn", 4)
    with pytest.raises(ValueError):
        build_model("srcnn", 5)
    with pytest.raises(ValueError):
        build_model("srcnn", 2, "multi")
    with pytest.raises(ValueError):
        build_model("proposed", 2, "triple")
    assert MODEL_REGISTRY["fscwn"].scales == (2,)


def test_registry_maps_names_to_classes_built_alike() -> None:
    """The registry is a plain dict of classes; build_model is only the lookup, and every class takes
    ``(scale, strategy, **options)``."""
    for name, cls in MODEL_REGISTRY.items():
        assert isinstance(cls, type) and issubclass(cls, SuperResolver), name
        torch.manual_seed(0)
        direct = cls(cls.scales[-1], cls.strategies[-1]).state_dict()
        torch.manual_seed(0)
        built = build_model(name, cls.scales[-1], cls.strategies[-1]).state_dict()
        assert direct.keys() == built.keys() and all(torch.equal(direct[k], built[k]) for k in direct), name


@pytest.mark.parametrize("name, options", [
    ("srcnn", {"kernel_sizes": (9, 2, 5)}), ("espcn", {"kernel_sizes": (5, 3, 4)}),
    ("fsrcnn", {"deconv_kernel": 8}), ("decnn", {"deconv_kernel": 12}), ("proposed", {"deconv_kernel": 10}),
])
def test_even_kernel_sizes_are_refused(name: str, options: dict) -> None:
    """An even kernel cannot keep the size with symmetric padding; each model says which option."""
    strategy = MODEL_REGISTRY[name].strategies[0]
    with pytest.raises(ValueError, match="deconv_kernel must be odd" if "deconv_kernel" in options
                       else "kernel sizes must be odd"):
        build_model(name, 2, strategy, **options)


def test_state_dict_keys_are_stable() -> None:
    """Saved weights (safetensors) load by these names: moving layers into mrsr.models.blocks or
    renaming an attribute must not change them."""
    def block(prefix: str) -> list[str]:
        return [f"{prefix}.{conv}.{p}" for conv in ("conv1", "conv2") for p in ("weight", "bias")]

    def conv(*names: str) -> list[str]:
        return [f"{n}.{p}" for n in names for p in ("weight", "bias")]

    expected = {
        ("srcnn", None, (("features", (8, 4)),)): conv("extract", "mapping", "reconstruct"),
        ("espcn", None, (("features", (8, 4)),)): conv("conv1", "conv2", "conv3"),
        ("fsrcnn", None, (("features", 8), ("shrink", 4), ("mapping", 1))):
            conv("body.0", "body.2", "body.4", "body.6", "deconv") + [f"body.{i}.weight" for i in (1, 3, 5, 7)],
        ("decnn", None, (("features", 8), ("layers", 3))): conv("deconv", "body.0", "body.1", "body.2"),
        ("fscwn", None, (("features", 8), ("widths", (8, 12)))):
            conv("shallow1", "shallow2", "reconstruct") + block("blocks.0") + block("blocks.1"),
        ("proposed", "multi", (("features", 8), ("units", 2))):
            conv("entry", "feature_deconv", "image_deconv") + block("body.0") + block("body.1") + ["branch_weights"],
        ("proposed", "single", (("features", 8), ("units", 2))):
            conv("entry", "feature_deconv") + block("body.0") + block("body.1"),
    }
    for (name, strategy, options), keys in expected.items():
        assert sorted(build_model(name, 2, strategy, **dict(options)).state_dict()) == sorted(keys), name


def test_builders_take_options() -> None:
    small = {
        "srcnn": {"features": (8, 4)},
        "fsrcnn": {"features": 8, "shrink": 4, "mapping": 1},
        "espcn": {"features": (8, 4), "activation": "relu"},
        "decnn": {"features": 8, "layers": 3, "deconv_init": "he"},
        "fscwn": {"features": 8, "widths": (8, 12)},
    }
    for name, options in small.items():
        full = sum(p.numel() for p in build_model(name, 2).parameters())
        shrunk = build_model(name, 2, **options)
        assert sum(p.numel() for p in shrunk.parameters()) < full
        assert shrunk(torch.rand(1, 1, 5, 7)).shape == (1, 1, 10, 14)
    with pytest.raises(TypeError):
        build_model("srcnn", 2, no_such_option=1)
    with pytest.raises(ValueError):
        build_model("espcn", 2, activation="sigmoid")


@pytest.mark.parametrize("config", [c for c in CONFIGS if TRAINABLE[c[0]]], ids=_id)
def test_gradient_step_reduces_loss(config: tuple[str, int, str | None]) -> None:
    name, scale, strategy = config
    torch.manual_seed(0)
    model = build_model(name, scale, strategy, **SMALL_OPTIONS.get(name, {})).double()
    lr, hr = _patch(scale)
    loss0 = _loss(model, lr, hr)
    loss0.backward()
    loss0 = float(loss0.detach())
    params = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in params), "every parameter takes part in the loss"
    grad_sq = sum(float((p.grad**2).sum()) for p in params)
    assert grad_sq > 0
    # Plain gradient step sized so that its first-order decrease is 1% of the loss.
    step = 0.01 * loss0 / grad_sq
    with torch.no_grad():
        for p in params:
            p -= step * p.grad
        loss1 = _loss(model, lr, hr)
    assert float(loss1) < loss0


def test_bicubic_is_not_trainable() -> None:
    assert not trainable("bicubic")
    assert not list(build_model("bicubic", 2).parameters())


@pytest.mark.parametrize(
    ("scale", "dtype"),
    [(2, torch.float64), (3, torch.float64), (4, torch.float64), (2, torch.float32)],
    ids=["x2-float64", "x3-float64", "x4-float64", "x2-float32"],
)
def test_proposed_folded_forward_equals_fused_output(scale: int, dtype: torch.dtype) -> None:
    torch.manual_seed(scale)
    model = build_model("proposed", scale, "multi").to(dtype)
    with torch.no_grad():
        for p in model.parameters():  # non-zero biases and unequal fusion weights
            p.add_(0.01 * torch.randn_like(p))
        lr = torch.rand(1, 1, 13, 17, dtype=dtype)
        folded = model(lr)
        outputs = model.loss_outputs(lr)
    fused = outputs[-1]
    assert len(outputs) == model.units + 1
    assert all(y.shape == folded.shape == (1, 1, 13 * scale, 17 * scale) for y in outputs)
    # Exact algebra in float64; in float32 the tolerance is relative to the output's magnitude.
    tol = 1e-5 * (1.0 if dtype == torch.float64 else max(1.0, float(fused.abs().max())))
    assert float((folded - fused).abs().max()) < tol


def test_decnn_deconvolution_starts_as_bicubic() -> None:
    assert [bicubic_support_kernel(n) for n in (2, 3, 4)] == [9, 13, 19]
    lr = torch.rand(1, 1, 20, 20, dtype=torch.float64)
    for scale in (2, 3, 4):
        model = DeCNN(scale, features=4, layers=2).double()
        with torch.no_grad():
            up = model.deconv(lr)
        ref = torch_upscale(lr, scale)
        b = 3 * scale  # border where zero padding differs from imresize's mirror padding
        assert float((up - ref)[..., b:-b, b:-b].abs().max()) < 1e-6


@pytest.mark.parametrize("name", ["decnn", "fscwn"])
def test_zero_residual_init_starts_at_the_interpolation(name):
    """residual_init='zero' (quick profile): the untrained net is exactly its upsampling path."""
    torch.manual_seed(0)
    model = build_model(name, 2, None, residual_init="zero").eval()
    lr = torch.rand(1, 1, 12, 10)
    with torch.inference_mode():
        start = model.deconv(lr) if name == "decnn" else torch_upscale(lr, 2)
        torch.testing.assert_close(model(lr), start, rtol=0, atol=0)
    with pytest.raises(ValueError, match="residual_init"):
        build_model(name, 2, None, residual_init="ones")


# --- named parameter groups and initialisation per group (train.param_groups, train.init) ---------

@pytest.mark.parametrize("config", CONFIGS, ids=_id)
def test_parameter_groups_cover_every_parameter_exactly_once(config: tuple[str, int, str | None]) -> None:
    name, scale, strategy = config
    model = build_model(name, scale, strategy)
    groups = model.param_groups()
    assert tuple(groups) == MODEL_REGISTRY[name].groups  # the same names for every option and strategy
    assert set(groups) <= set(GROUP_NAMES)
    grouped = [id(p) for params in groups.values() for p in params]
    assert len(grouped) == len(set(grouped)), "a parameter in two groups"
    assert set(grouped) == {id(p) for p in model.parameters()}, "a parameter in no group"
    if trainable(name):
        assert groups["body"] and groups["last"]


def test_last_group_is_the_reconstruction_layer() -> None:
    """'last' means the same layer role in every model: the one that writes the image (or residual)."""
    expected = {"srcnn": "reconstruct", "fsrcnn": "deconv", "espcn": "conv3", "decnn": "body.19",
                "fscwn": "reconstruct", "proposed": "feature_deconv"}
    for name, layer in expected.items():
        model = build_model(name, 2, MODEL_REGISTRY[name].strategies[0])
        names = {id(p): n for n, p in model.named_parameters()}
        assert {names[id(p)].rsplit(".", 1)[0] for p in model.param_groups()["last"]} == {layer}, name
    single = build_model("proposed", 2, "single").param_groups()
    assert single["upsample"] == [] and single["fusion"] == []


def test_init_per_group() -> None:
    torch.manual_seed(0)
    model = build_model("srcnn", 2)
    model.apply_init({"all": "gaussian"}, std=1e-3)
    assert all(float(p.detach().std()) < 2e-3 for n, p in model.named_parameters() if n.endswith("weight"))
    assert all(float(p.detach().abs().max()) == 0 for n, p in model.named_parameters() if n.endswith("bias"))
    fsrcnn = build_model("fsrcnn", 3)  # as published: He convolutions, Gaussian deconvolution
    he = fsrcnn.body[0].weight.detach().clone()
    fsrcnn.apply_init({"last": "gaussian"}, std=1e-3)
    assert float(fsrcnn.deconv.weight.detach().std()) < 2e-3 and torch.equal(fsrcnn.body[0].weight, he)
    assert float(fsrcnn.body[1].weight.detach()[0]) == 0.25  # PReLU slopes are not re-initialised
    # 'zero' on 'last' is residual_init='zero'; 'bicubic' on 'upsample' is the bicubic deconvolution
    for name in ("decnn", "fscwn"):
        torch.manual_seed(0)
        a = build_model(name, 2, None, residual_init="zero")
        torch.manual_seed(0)
        b = build_model(name, 2, None)
        b.apply_init({"last": "zero"})
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert ka == kb and torch.equal(va, vb), ka
    torch.manual_seed(0)
    a = build_model("proposed", 3, "double", features=8, units=2, image_deconv_init="bicubic")
    torch.manual_seed(0)
    b = build_model("proposed", 3, "double", features=8, units=2)
    b.apply_init({"upsample": "bicubic"})
    assert torch.equal(a.image_deconv.weight, b.image_deconv.weight)
    with pytest.raises(ValueError, match="one-channel transposed convolutions"):
        b.apply_init({"last": "bicubic"})
    with pytest.raises(ValueError, match="no parameter group 'fusion'"):
        build_model("srcnn", 2).apply_init({"fusion": "he"})
    with pytest.raises(ValueError, match="init scheme"):
        build_model("srcnn", 2).apply_init({"all": "ones"})


def _he_expected_std(layer: torch.nn.Conv2d | torch.nn.ConvTranspose2d) -> float:
    """sqrt(2 / fan-in), the fan-in written out independently of mrsr.models.blocks.fan_in: a
    convolution sums in x kh x kw inputs; a stride-s transposed convolution in x (kh/s) x (kw/s)."""
    kh, kw = layer.kernel_size
    sh, sw = layer.stride if isinstance(layer, torch.nn.ConvTranspose2d) else (1, 1)
    return (2.0 / (layer.in_channels / layer.groups * kh * kw / (sh * sw))) ** 0.5


def _he_layers(config: tuple[str, int, str | None], options: dict, reinit: bool) -> dict[str, list[torch.Tensor]]:
    """Each transposed convolution's weights (by module name) over eight builds with different seeds."""
    name, scale, strategy = config
    draws: dict[str, list[torch.Tensor]] = {}
    for seed in range(8):
        torch.manual_seed(seed)
        model = build_model(name, scale, strategy, **options)
        if reinit:
            model.apply_init({"all": "he"})
        for module_name, layer in model.named_modules():
            if isinstance(layer, torch.nn.ConvTranspose2d):
                draws.setdefault(module_name, []).append(layer.weight.detach().flatten())
    return draws


#: The transposed convolutions that start as He by default, with the options that make them so.
HE_BY_DEFAULT = {"proposed": {}, "fsrcnn": {}, "decnn": {"deconv_init": "he"}}


@pytest.mark.parametrize("config", [c for c in CONFIGS if c[0] != "bicubic"], ids=_id)
def test_every_transposed_convolution_starts_with_its_fan_correct_he_std(config) -> None:
    """Issue #19: torch's kaiming_normal_ takes a transposed convolution's fan-in from its output maps
    (the proposed net's feature deconvolution started 5.7 x too large). Every transposed convolution,
    as built by default (where He is its default) and after ``train.init: {all: he}``, has the std of
    its real fan-in, within 5% (8 seeds' draws pooled: at least 648 weights)."""
    name = config[0]
    cases = [True] + ([False] if name in HE_BY_DEFAULT else [])
    for reinit in cases:
        model = build_model(*config, **HE_BY_DEFAULT.get(name, {}))
        layers = dict(model.named_modules())
        for module_name, draws in _he_layers(config, HE_BY_DEFAULT.get(name, {}), reinit).items():
            std = torch.cat(draws).std().item()
            expected = _he_expected_std(layers[module_name])
            assert abs(std / expected - 1) < 0.05, (config, module_name, reinit, std, expected)


def test_he_of_convolutions_is_unchanged_from_torch_kaiming() -> None:
    """The fan-correct init changes only transposed convolutions: a convolution gets exactly the draws
    of kaiming_normal_(fan_in, relu), so SRCNN's, ESPCN's and every net's convolutions start as before."""
    from mrsr.models.blocks import he_normal_

    conv = torch.nn.Conv2d(64, 32, 5)
    torch.manual_seed(3)
    torch.nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
    reference = conv.weight.detach().clone()
    torch.manual_seed(3)
    he_normal_(conv)
    assert torch.equal(conv.weight, reference)
