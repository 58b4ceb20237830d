"""What a norm does in its block: the one list of roles, of placements, and the one matcher
of sub-layer names. Plain strings, no torch: discovery, parameter groups, tables and figures
all read these.

Roles, in the order a block runs them: embed (a norm on the embeddings: BLOOM), attn (feeds
attention), attn+mlp (one norm feeding both, in parallel: GPT-J, Phi, Falcon), mlp (feeds the
MLP), qk (query / key norms inside attention), final (the last norm before the head), other.
Placements: pre (the norm feeds a sub-layer; the stream goes around it) or post (its output
joins the residual stream: original post-LN, or Gemma 2 / OLMo 2 sub-layer output norms).
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
