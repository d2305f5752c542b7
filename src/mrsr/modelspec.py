"""What the workflow knows of each model, without importing torch: the one place of a model's facts.

:data:`MODEL_SPECS` maps a config name to its :class:`ModelSpec`: where its class lives, the scales
and strategies it supports, its parameter groups, its share of a GPU, its options (the schema of the
config's ``model.<name>``), its name in the report and its keys in the paper's tables. The order of
the dict is the report's order (Tables 2-3, Figure 3). An explicit dict filled by :func:`register`,
which refuses a second entry of one name (as BasicSR's registry); no module is imported to find models.

Everything else derives from it: :mod:`mrsr.config` checks experiments against it, the workflow's
``{job}`` wildcard (:func:`mrsr.workflow_support.job_pattern`) lists its jobs, the schema's ``model``
section is completed with its options (:func:`mrsr.config.validate_config`), the report takes its
order and names, and each model class (``src/mrsr/models/<name>.py``) takes its scales, strategies,
groups and GPU slots from its entry (:class:`mrsr.models.base.SuperResolver`). docs/models.md's model
list is checked against it (tests/test_docs.py).

Adding a model: write its class in ``src/mrsr/models/<name>.py`` and :func:`register` its entry at
the end of this file; then give it an experiment in the profiles (README, "Add or change a model").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Parameter-group names models may declare, with one meaning across models (docs/models.md):
#: ``body`` the feature layers; ``last`` the reconstruction layer that writes the image or residual
#: (SRCNN's 5x5, FSRCNN's deconvolution, ESPCN's sub-pixel convolution, de-CNN's and FSCWN's last
#: convolution, the proposed net's feature deconvolution); ``upsample`` a learned interpolation of the
#: LR image (de-CNN's deconvolution, the proposed net's image deconvolution); ``fusion`` the proposed
#: net's branch weights w_i. The schema's ``train.param_groups`` and ``train.init`` name the same
#: (tests/test_config.py checks them against this tuple).
GROUP_NAMES = ("body", "last", "upsample", "fusion")

# GPU sharing (docs/gpu.md): `snakemake --resources gpu_slots=8` runs training jobs side by side on
# one card while their slots sum to at most 8. The weights follow the cost per patch
# (docs/models.md): the proposed net, de-CNN and FSCWN need about 100 times the FLOPs of SRCNN, FSRCNN
# and ESPCN. On an H100 the proposed net at batch 128 reaches 13% of the bf16 peak even with CUDA
# graphs, so two heavy jobs still fit a card; a light job is bound by its host thread (ESPCN x2:
# 78,458 samples/s with kernels too small to fill the GPU), so eight can overlap.
GPU_SLOTS_PER_CARD = 8
LIGHT, HEAVY = 1, 4

@dataclass(frozen=True)
class ModelSpec:
    """One model's facts.

    Attributes:
        name: the config name (lower-case letters and digits: job names split on ``_``).
        module: the module holding its class, e.g. ``mrsr.models.srcnn``.
        class_name: the class in ``module``, a :class:`mrsr.models.base.SuperResolver`.
        display: its name in the report (Tables 2-3, Figure 3).
        scales: the scales it is defined for (the config and the constructor refuse others).
        strategies: the strategies of Table 1 it has; ``(None,)`` for models without strategies.
        groups: the parameter-group names its ``param_groups`` returns (among :data:`GROUP_NAMES`),
            the same for every option and strategy; ``train.param_groups`` and ``train.init`` may
            name them. Empty: no learned parameters, so no training job (:attr:`trainable`).
        gpu_slots: its share of one GPU when training jobs share a card (rule ``train``'s
            ``gpu_slots``; a card has :data:`GPU_SLOTS_PER_CARD`): :data:`LIGHT` or :data:`HEAVY`.
        options: JSON Schema of each option of its constructor (config ``model.<name>``); the
            constructor's keyword-only parameters and these agree (tests/test_config.py).
        paper: its key in the paper's tables (:mod:`mrsr.paper`'s TABLE2, TABLE3); None when the
            paper does not report it.
        table_strategy: the strategy its row of Tables 2-3 and Figure 3 shows (the proposed net:
            ``multi``, the paper's "Ours"); None for models without strategies.
    """

    name: str
    module: str
    class_name: str
    display: str
    scales: tuple[int, ...] = (2, 3, 4)
    strategies: tuple[str | None, ...] = (None,)
    groups: tuple[str, ...] = ("body",)
    gpu_slots: int = LIGHT
    options: dict[str, Any] = field(default_factory=dict)
    paper: str | None = None
    table_strategy: str | None = None

    @property
    def trainable(self) -> bool:
        """Whether it has learned parameters, i.e. can be a training job (all but bicubic)."""
        return bool(self.groups)

    @property
    def heavy(self) -> bool:
        """Whether it is one of the heavy networks (about 100 times the FLOPs per patch of the light
        ones), which share a GPU by :data:`HEAVY` slots and get the CPU fast path
        (:meth:`mrsr.fastpath.FastPath.resolve`)."""
        return self.gpu_slots == HEAVY


#: Config name -> spec, in the report's order.
MODEL_SPECS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to :data:`MODEL_SPECS`.

    Raises:
        ValueError: a name already registered, a name job names cannot carry, a group outside
            :data:`GROUP_NAMES`, or a GPU share other than :data:`LIGHT` and :data:`HEAVY`.
    """
    if spec.name in MODEL_SPECS:
        raise ValueError(f"model {spec.name!r} is registered twice")
    if not spec.name.isalnum() or not spec.name.islower():
        raise ValueError(f"model name {spec.name!r}: lower-case letters and digits only (job names split on '_')")
    if not set(spec.groups) <= set(GROUP_NAMES):
        raise ValueError(f"model {spec.name!r}: groups {spec.groups} not among {GROUP_NAMES}")
    if spec.gpu_slots not in (LIGHT, HEAVY):
        raise ValueError(f"model {spec.name!r}: gpu_slots must be LIGHT ({LIGHT}) or HEAVY ({HEAVY})")
    MODEL_SPECS[spec.name] = spec
    return spec


def spec_of(name: str) -> ModelSpec:
    """The spec of ``name``.

    Raises:
        KeyError: an unregistered name, listing the registered ones.
    """
    if name not in MODEL_SPECS:
        raise KeyError(f"unknown model {name!r}; registered: {sorted(MODEL_SPECS)}")
    return MODEL_SPECS[name]


def display_name(name: str) -> str:
    """The report's name of model ``name`` (the name itself when unregistered)."""
    spec = MODEL_SPECS.get(name)
    return spec.display if spec else name


def report_order() -> list[str]:
    """Model names in the report's order (Tables 2-3, Figure 3)."""
    return list(MODEL_SPECS)


_POSITIVE = {"type": "integer", "minimum": 1}
_HE_ZERO = {"type": "string", "enum": ["he", "zero"]}


def _ints(n: int | None = None) -> dict[str, Any]:
    """JSON Schema of a list of positive integers (``n`` of them, or at least one)."""
    count = {"minItems": n, "maxItems": n} if n else {"minItems": 1}
    return {"type": "array", **count, "items": _POSITIVE}


# --- the models, in the report's order. Each module's docstring cites the publication it reproduces.
register(ModelSpec("bicubic", "mrsr.models.bicubic", "Bicubic", "Bicubic", groups=(), paper="bicubic"))
register(ModelSpec("srcnn", "mrsr.models.srcnn", "SRCNN", "SRCNN", groups=("body", "last"), paper="srcnn",
                   options={"features": _ints(2), "kernel_sizes": _ints(3)}))
register(ModelSpec("espcn", "mrsr.models.espcn", "ESPCN", "ESPCN", groups=("body", "last"), paper="espcn",
                   options={"features": _ints(2), "kernel_sizes": _ints(3),
                            "activation": {"type": "string", "enum": ["tanh", "relu"]}}))
register(ModelSpec("fsrcnn", "mrsr.models.fsrcnn", "FSRCNN", "FSRCNN", groups=("body", "last"), paper="fsrcnn",
                   options={"features": _POSITIVE, "shrink": _POSITIVE, "mapping": _POSITIVE,
                            "deconv_kernel": _POSITIVE}))
register(ModelSpec("decnn", "mrsr.models.decnn", "DeCNN", "de-CNN", groups=("upsample", "body", "last"),
                   gpu_slots=HEAVY, paper="decnn",
                   options={"features": _POSITIVE, "layers": {"type": "integer", "minimum": 2},
                            "deconv_kernel": {"type": ["integer", "null"], "minimum": 1},
                            "deconv_init": {"type": "string", "enum": ["bicubic", "he"]}, "residual_init": _HE_ZERO}))
register(ModelSpec("fscwn", "mrsr.models.fscwn", "FSCWN", "FSCWN", scales=(2,), groups=("body", "last"),
                   gpu_slots=HEAVY, paper="fscwn",
                   options={"features": _POSITIVE, "widths": _ints(), "residual_init": _HE_ZERO}))
register(ModelSpec("proposed", "mrsr.models.proposed", "MultiResolutionSR", "Ours", strategies=("single", "double", "multi"),
                   groups=("body", "last", "upsample", "fusion"), gpu_slots=HEAVY, paper="proposed",
                   table_strategy="multi",
                   options={"features": _POSITIVE, "units": _POSITIVE, "deconv_kernel": _POSITIVE,
                            "image_deconv_init": {"type": "string", "enum": ["he", "bicubic"]},
                            "feature_deconv_init": _HE_ZERO}))
