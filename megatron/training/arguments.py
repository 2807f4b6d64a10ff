"""``megatron.training.arguments`` as upstream entry scripts import it: flag parsing and the TransformerConfig.

The flags themselves live in ``megatron.training.config``; this module only gives them upstream's names."""

from megatron.training.model_setup import transformer_config_from_args
from megatron.training.training import parse_args  # noqa: F401


def core_transformer_config_from_args(args, config_class=None):
    """The megatron-core TransformerConfig of the parsed flags (as the model builders of this stack use).

    ``config_class``: only megatron-core's TransformerConfig is built here; another class is refused."""
    from megatron.core.transformer import TransformerConfig

    if config_class is not None and config_class is not TransformerConfig:
        raise TypeError(f"core_transformer_config_from_args builds TransformerConfig only, not {config_class}")
    config = transformer_config_from_args(args)
    vp = getattr(args, "virtual_pipeline_model_parallel_size", None)
    if vp is not None:
        config.virtual_pipeline_model_parallel_size = vp
    return config
