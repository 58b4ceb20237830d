"""Where a discovered norm sits: its role (the sub-layer it serves) and placement (pre or
post), from the probe's dataflow where it ran, else from the module's attribute name."""

from __future__ import annotations

import math

from torch import nn

from lninspect.norms.dataflow import Flow, module_sublayer

# Fallback only: role by the module's attribute name, when the probe cannot run.
ROLE_BY_NAME = {
    "attn": {
        "ln_1",
        "input_layernorm",
        "attention_norm",
        "self_attn_layer_norm",
        "ln_attn",
        "attn_norm",
        "norm1",
        "norm_1",
        "pre_attention_layernorm",
    },
    "mlp": {
        "ln_2",
        "post_attention_layernorm",
        "ffn_norm",
        "final_layer_norm",
        "ln_mlp",
        "mlp_norm",
        "norm2",
        "norm_2",
        "pre_feedforward_layernorm",
        "pre_mlp_layernorm",
    },
    "final": {"ln_f", "norm", "final_layer_norm", "final_layernorm", "norm_f", "ln_out"},
}
POST_BY_NAME = {
    "post_feedforward_layernorm": "mlp",
    "post_mlp_layernorm": "mlp",
    "post_ffn_norm": "mlp",
    "post_attn_norm": "attn",
    "post_attention_norm": "attn",
}


def place(
    name: str, layer: int | None, modules: dict[str, nn.Module], flows: dict[str, Flow]
) -> tuple[str, str]:
    """(role, placement): from the probe's dataflow where it ran, else from the name."""
    if _inside_attention(name, layer, modules):
        return "qk", "pre"
    flow = flows.get(name)
    if flow is None:
        return _place_by_name(name, layer)
    # A pre norm's input is the stream, which the residual addition uses again; a post
    # norm's output joins the stream (or, last in a post-LN stack, feeds the head).
    post = flow.output_added or not flow.input_added
    if layer is None:
        first_block = min(
            (f.order for n, f in flows.items() if layer_index(n) is not None), default=math.inf
        )
        if flow.order < first_block:
            return "embed", "post" if post else "pre"
        return "final", "post" if flow.output_added else "pre"
    block = _block_path(name)
    if post:  # a post norm belongs to the sub-layer that ran just before it
        used = [flow.after] if flow.after and _block_path(flow.after) == block else []
    else:  # a pre norm to the sub-layers of its block that receive its output
        used = [c for c in flow.consumers if _block_path(c) == block and c != block]
    kinds = {module_sublayer(c, modules[c]) for c in used} - {None}
    role = "attn+mlp" if kinds == {"attn", "mlp"} else kinds.pop() if kinds else None
    return role or _place_by_name(name, layer)[0], "post" if post else "pre"


def _place_by_name(name: str, layer: int | None) -> tuple[str, str]:
    leaf = name.rsplit(".", 1)[-1]
    if layer is None:
        if "emb" in leaf:
            return "embed", "post"
        return ("final" if leaf in ROLE_BY_NAME["final"] else "other"), "pre"
    if leaf in POST_BY_NAME:
        return POST_BY_NAME[leaf], "post"
    for role in ("attn", "mlp"):
        if leaf in ROLE_BY_NAME[role]:
            return role, "pre"
    return "other", "pre"


def _inside_attention(name: str, layer: int | None, modules: dict[str, nn.Module]) -> bool:
    """Whether a module between the block and the norm is an attention sub-layer."""
    parts = name.split(".")
    block_end = next((i for i, p in enumerate(parts) if p.isdigit()), None)
    first = block_end + 2 if layer is not None and block_end is not None else 1
    ancestors = [".".join(parts[:i]) for i in range(first, len(parts))]  # below the block
    return any(module_sublayer(a, modules[a]) == "attn" for a in ancestors if a in modules)


def _block_path(name: str) -> str | None:
    """`model.layers.3.self_attn` -> `model.layers.3`: the path up to the layer index."""
    parts = name.split(".")
    index = next((i for i, p in enumerate(parts) if p.isdigit()), None)
    return None if index is None else ".".join(parts[: index + 1])


def layer_index(name: str) -> int | None:
    """The first integer in the dotted path: `transformer.h.3.ln_1` is layer 3."""
    for part in name.split("."):
        if part.isdigit():
            return int(part)
    return None
