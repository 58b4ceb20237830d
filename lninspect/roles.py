"""What a norm does in its block: the one list of roles, of placements, and the one matcher
of sub-layer names. Plain strings, no torch: discovery, parameter groups, tables and figures
all read these.

Roles, in the order a block runs them: embed (a norm on the embeddings: BLOOM), attn (feeds
attention), attn+mlp (one norm feeding both, in parallel: GPT-J, Phi, Falcon), mlp (feeds the
MLP), qk (query / key norms inside attention), final (the last norm before the head), other.
Placements: pre (the norm feeds a sub-layer; the stream goes around it) or post (its output
joins the residual stream: original post-LN, or Gemma 2 / OLMo 2 sub-layer output norms).

What a norm reads (its stream), the key to every view that speaks of the residual stream:
residual (GPT-2's ln_1 / ln_2, Llama's input / post_attention norms, Gemma's input /
pre_feedforward norms, a post-LN norm of x + f(x), the final norm), sublayer (a sub-layer's
output before it joins the stream: Gemma 2 / 3 and OLMo 2's post norms), projection (query /
key norms, per head), embedding (a norm on the embeddings: BLOOM) or unknown.
"""

from __future__ import annotations

ROLES = ("embed", "attn", "attn+mlp", "mlp", "qk", "final", "other")
ROLE_LABELS = {
    "embed": "embedding norm",
    "attn": "before attention",
    "attn+mlp": "before attention + MLP",
    "mlp": "before the MLP",
    "qk": "query / key norms",
    "final": "final norm",
    "other": "other norms",
}
PLACEMENTS = ("pre", "post")
STREAMS = ("residual", "sublayer", "projection", "embedding", "unknown")
STREAM_LABELS = {
    "residual": "the residual stream",
    "sublayer": "a sub-layer's output",
    "projection": "query / key projections",
    "embedding": "the embeddings",
    "unknown": "an input not identified",
}
SUBLAYER_NAMES = {"attn": "attention", "mlp": "the MLP", "attn+mlp": "attention + MLP"}


def stream_of(role: str, placement: str, input_summed: bool | None = None) -> str:
    """What a norm reads, from its role and placement; a post norm reads the residual stream
    when its input is the output of an addition (post-LN: N(x + f(x))), a sub-layer's output
    otherwise (Gemma: x + N(f(x))). Without the probe (`input_summed` None) a post norm in a
    block is taken to read a sub-layer's output, as the names that say post do."""
    if role == "qk":
        return "projection"
    if role == "embed":
        return "embedding"
    if role == "other":  # a pre norm's input is what the residual addition uses again
        return "residual" if placement == "pre" and input_summed is not None else "unknown"
    if placement == "post" and role != "final" and not input_summed:
        return "sublayer"
    return "residual"


def group_label(reads: str, role: str, placement: str) -> str:
    """How tables, legends and sentences name the norms of one (stream, role, placement):
    "before attention", "on the MLP's output", "after attention (post-LN)", ..."""
    sublayer = SUBLAYER_NAMES.get(role)
    if reads == "sublayer" and sublayer:
        return f"on {sublayer}'s output" if role != "mlp" else "on the MLP's output"
    if reads == "residual" and placement == "post" and sublayer:
        return f"after {sublayer} (post-LN)"
    return ROLE_LABELS.get(role, role)


def group_order(role: str, placement: str) -> tuple[int, int]:
    """Block order of (role, placement) groups: by role, pre before post."""
    rank = ROLES.index(role) if role in ROLES else len(ROLES)
    return rank, PLACEMENTS.index(placement) if placement in PLACEMENTS else len(PLACEMENTS)


# Words in a module's attribute or class name that mark an attention or an MLP sub-layer
# (`attn`, `self_attention`, `GPT2MLP`, `feed_forward`, ...), and the leaf names of MLP
# projections that sit directly in a block (GPT-J's `fc_in`, OPT's `fc1`, ...).
ATTENTION_WORDS = ("attn", "attention")
MLP_WORDS = ("mlp", "ffn", "feed_forward", "feedforward")
MLP_LEAVES = frozenset(
    {
        "fc1",
        "fc2",
        "fc_in",
        "fc_out",
        "c_fc",
        "dense_h_to_4h",
        "dense_4h_to_h",
        "gate_proj",
        "up_proj",
        "down_proj",
        "w1",
        "w2",
        "w3",
    }
)


def sublayer_kind(leaf: str, class_name: str = "") -> str | None:
    """ "attn" or "mlp" from a module's attribute name (and class name), else None."""
    leaf, cls = leaf.lower(), class_name.lower()
    if any(w in leaf or w in cls for w in ATTENTION_WORDS):
        return "attn"
    if leaf in MLP_LEAVES or any(w in leaf or w in cls for w in MLP_WORDS):
        return "mlp"
    return None


def in_sublayer(path: str) -> str | None:
    """The sub-layer a dotted module path lies in, from its innermost matching component.

    `transformer.h.0.mlp.c_proj` -> "mlp"; `model.layers.3.self_attn.o_proj` -> "attn".
    The leaf itself is not looked at: it names the projection, not what holds it.
    """
    for part in reversed(path.split(".")[:-1]):
        kind = sublayer_kind(part)
        if kind is not None:
            return kind
    return None


def ordered_roles(present: set[str]) -> list[str]:
    """The roles in `present`, in block order (unknown ones last, sorted)."""
    return [r for r in ROLES if r in present] + sorted(present - set(ROLES))
