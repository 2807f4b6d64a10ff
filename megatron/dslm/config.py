"""The method's configuration, declared once: every flag DeepScaleLM reads, with its default and help.

Training (``megatron.training.config``) and the CLIs (``predict``, ``estimate_corr``, ``plot_moments``) add
their flags with :func:`add_arguments`, so names, defaults and help cannot drift apart; :func:`model_arch`
is the one conversion from parsed values to the ``ModelArch`` that schemes and the predictor read.
Pure Python (no torch, no megatron-core), so the theory CLIs stay light.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Iterable, Optional

from .contract import DEFAULT_EMBEDDING_CORR, ModelArch

__all__ = ["DEFAULT_EMBEDDING_CORR", "DSLMConfig", "add_arguments", "explicit_fields", "flag", "model_arch"]

# Attribute of a parsed namespace holding the fields the user set on the command line.
EXPLICIT_ATTR = "dslm_explicit_fields"


def _flag(default, help: str, type=None, *, group: str, choices=None, aliases=(), knob: bool = False):
    """A DSLMConfig field: its flag's argparse details travel in ``metadata``.

    ``group`` is training's --help section; ``knob`` marks fields that only an init scheme reads (a scheme
    that ignores one refuses it when set explicitly).
    """
    meta = dict(help=help, type=type, group=group, choices=choices, aliases=tuple(aliases), knob=knob)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DSLMConfig:
    """Every method flag; a field ``foo_bar`` is the flag ``--foo-bar``."""

    # Architecture the method reads.
    num_layers: Optional[int] = _flag(None, "Number of transformer layers (N).", int, group="model")
    hidden_size: Optional[int] = _flag(None, "Transformer hidden size (d).", int, group="model")
    ffn_hidden_size: Optional[int] = _flag(None, "FFN hidden size; default 4 * hidden size.", int, group="model")
    num_attention_heads: Optional[int] = _flag(None, "Number of attention heads.", int, group="model")
    kv_channels: Optional[int] = _flag(None, "Per-head size; default hidden size / heads.", int, group="model")
    seq_length: Optional[int] = _flag(None, "Sequence length of training samples (the attention window L).", int,
                                      group="model")
    vocab_size: Optional[int] = _flag(None, "Vocabulary size for --tokenizer-type NullTokenizer (mock data); no "
                                      "init scheme reads it.", int, group="model")
    hidden_dropout: float = _flag(0.1, "Dropout on sub-layer outputs and embeddings.", float, group="model")
    attention_dropout: float = _flag(0.1, "Dropout on attention probabilities.", float, group="model")
    activation: str = _flag("gelu", "FFN activation.", str, group="model", choices=("gelu", "relu"))
    apply_residual_connection_post_layernorm: bool = _flag(
        False, "Post-LN: x' = LN(lambda*x + beta*F(x)) after each sub-layer, plus an embedding LayerNorm "
        "(original BERT). Default is Pre-LN: x' = lambda*x + beta*F(LN(x)) with a final LayerNorm.",
        group="model", aliases=("--post-ln",))
    model_type: str = _flag("gpt", "gpt (causal attention, two embedding tables) or bert (bidirectional); "
                            "training takes it from the entry script.", str, group="model", choices=("gpt", "bert"))
    num_tokentypes: Optional[int] = _flag(None, "Token-type table size; default 2 for BERT, 0 for GPT.", int,
                                          group="data")
    # The method.
    init_scheme: str = _flag("megatron", "Weight-init scheme (and its residual scaling): megatron (default "
                             "sigma=0.02, output projections 0.02/sqrt(2N)), xavier, dslm, dslm-simplified, "
                             "deepnet, dsinit.", str, group="dslm")
    init_method_std: float = _flag(0.02, "Std of the 'megatron' init scheme.", float, group="model", knob=True)
    dslm_k: float = _flag(1.0, "DSLM residual scaling: beta^2 = k/N, lambda^2 = 1 - beta^2.", float,
                          group="dslm", knob=True)
    residual_lambda_sq: Optional[float] = _flag(None, "Explicit lambda^2 of x' = lambda*x + beta*F(x).", float,
                                                group="dslm", knob=True)
    residual_beta_sq: Optional[float] = _flag(None, "Explicit beta^2 of x' = lambda*x + beta*F(x).", float,
                                              group="dslm", knob=True)
    allow_unnormalized_residual: bool = _flag(False, "Accept lambda^2 + beta^2 != 1.", group="dslm", knob=True)
    embedding_corr: Optional[float] = _flag(
        None, "Token correlation r0 of the embedding output assumed by DSLM's V/O init (and by the predictor). "
        "Default: training measures it on --data-path (python -m megatron.dslm.estimate_corr); otherwise "
        f"{DEFAULT_EMBEDDING_CORR}, the reference's value.", float, group="dslm", knob=True)


FIELDS = {f.name: f for f in dataclasses.fields(DSLMConfig)}
# Fields read only by init schemes: a scheme that does not read one refuses it when it is set explicitly.
SCHEME_KNOBS = frozenset(name for name, f in FIELDS.items() if f.metadata["knob"])


def flag(name: str) -> str:
    """The command-line spelling of a field: ``dslm_k`` -> ``--dslm-k``."""
    return "--" + name.replace("_", "-")


def fields_in_group(group: str) -> tuple:
    return tuple(name for name, f in FIELDS.items() if f.metadata["group"] == group)


def _record(namespace, dest: str) -> None:
    explicit = getattr(namespace, EXPLICIT_ATTR, None)
    if explicit is None:
        explicit = set()
        setattr(namespace, EXPLICIT_ATTR, explicit)
    explicit.add(dest)


class _Store(argparse._StoreAction):
    """``store`` that also records the field as set on the command line."""

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        _record(namespace, self.dest)


class _StoreTrue(argparse._StoreTrueAction):
    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        _record(namespace, self.dest)


def add_arguments(parser, names: Optional[Iterable[str]] = None, *, required: Iterable[str] = (),
                  aliases: bool = False):
    """Add the flags of ``names`` (default: every field) to ``parser`` (a parser or an argument group).

    ``required`` fields are required on this command line (training leaves them optional and checks them
    in ``validate_args``); ``aliases`` adds short spellings such as ``--post-ln``.
    """
    names = tuple(FIELDS) if names is None else tuple(names)
    required = frozenset(required)
    unknown = (set(names) | required) - set(FIELDS)
    if unknown:
        raise KeyError(f"not DSLMConfig fields: {sorted(unknown)}")
    for name in names:
        meta = FIELDS[name].metadata
        spellings = [flag(name)] + (list(meta["aliases"]) if aliases else [])
        kwargs = dict(dest=name, default=FIELDS[name].default, help=meta["help"].replace("%", "%%"))
        if name in required:
            kwargs["required"] = True
        if meta["type"] is None:  # a switch
            parser.add_argument(*spellings, action=_StoreTrue, **kwargs)
        else:
            parser.add_argument(*spellings, action=_Store, type=meta["type"], choices=meta["choices"], **kwargs)
    return parser


def explicit_fields(namespace) -> frozenset:
    """Fields of ``namespace`` given on the command line (defaults and ``set_defaults`` do not count)."""
    return frozenset(getattr(namespace, EXPLICIT_ATTR, None) or ())


def model_arch(values, **overrides) -> ModelArch:
    """The one conversion from parsed values (a Namespace, a DSLMConfig) to ``ModelArch``.

    Missing attributes take DSLMConfig's defaults; ``overrides`` win (training passes ``model_type`` and the
    padded vocabulary). None means "derived": num_tokentypes 2 for BERT else 0, r0 the reference's value.
    """

    def get(name):
        if name in overrides:
            return overrides[name]
        return getattr(values, name, FIELDS[name].default)

    unknown = set(overrides) - set(FIELDS)
    if unknown:
        raise KeyError(f"not DSLMConfig fields: {sorted(unknown)}")
    model_type = get("model_type")
    num_tokentypes = get("num_tokentypes")
    embedding_corr = get("embedding_corr")
    vocab_size = get("vocab_size")
    shape = decoder_shape(values)
    return ModelArch(
        num_layers=get("num_layers"),
        hidden_size=get("hidden_size"),
        num_attention_heads=get("num_attention_heads"),
        seq_length=get("seq_length"),
        vocab_size=ModelArch.vocab_size if vocab_size is None else vocab_size,
        ffn_hidden_size=get("ffn_hidden_size"),
        kv_channels=get("kv_channels"),
        model_type=model_type,
        num_tokentypes=(2 if model_type == "bert" else 0) if num_tokentypes is None else num_tokentypes,
        hidden_dropout=get("hidden_dropout"),
        attention_dropout=get("attention_dropout"),
        post_ln=bool(get("apply_residual_connection_post_layernorm")),
        activation=shape.pop("activation", get("activation")),
        embedding_corr=DEFAULT_EMBEDDING_CORR if embedding_corr is None else embedding_corr,
        dslm_k=get("dslm_k"),
        residual_lambda_sq=get("residual_lambda_sq"),
        residual_beta_sq=get("residual_beta_sq"),
        allow_unnormalized_residual=bool(get("allow_unnormalized_residual")),
        init_method_std=get("init_method_std"),
        **shape,
    )


def decoder_shape(values) -> dict:
    """ModelArch's decoder-shape fields from training's upstream-named flags (``--swiglu``, ``--normalization``,
    ``--position-embedding-type``, ``--group-query-attention``, ...); a namespace without them (the theory CLIs,
    a DSLMConfig) gets the 2019 transformer, ModelArch's defaults."""

    def get(name, default):
        value = getattr(values, name, None)
        return default if value is None else value

    swiglu = bool(get("swiglu", False))
    shape = dict(
        gated_linear_unit=swiglu,
        normalization=get("normalization", ModelArch.normalization),
        position_embedding_type=get("position_embedding_type", ModelArch.position_embedding_type),
        rotary_base=float(get("rotary_base", ModelArch.rotary_base)),
        rotary_percent=float(get("rotary_percent", ModelArch.rotary_percent)),
        num_query_groups=get("num_query_groups", None) if get("group_query_attention", False) else None,
        add_bias_linear=bool(get("add_bias_linear", True)),
        untie_embeddings_and_output_weights=bool(get("untie_embeddings_and_output_weights", False)),
        qk_layernorm=bool(get("qk_layernorm", False)),
    )
    if swiglu:
        shape["activation"] = "silu"
    return shape
