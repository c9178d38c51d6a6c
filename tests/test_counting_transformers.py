"""MACs of attention: the projections inside nn.MultiheadAttention, Q K^T and (.) V, opaque
blocks and wrapped functions; torchvision's published figures for vit_b_16, swin_t and
convnext_tiny."""

from __future__ import annotations

import json

import pytest
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from kdsearch.cli import main
from kdsearch.graph.counting import count_model, count_untraced, flop_counter
from kdsearch.graph.trace import register_leaf_module

L, E, HEADS, MLP = 17, 32, 4, 64  # tokens (16 patches + class token), width, heads, MLP width


def attention_macs(queries: int, keys: int, width: int, kdim: int | None = None,
                   vdim: int | None = None) -> int:
    """By hand: q, k, v and output projections, then Q K^T and (.) V."""
    kdim, vdim = kdim or width, vdim or width
    projections = queries * width * width * 2 + keys * width * (kdim + vdim)
    return projections + 2 * queries * keys * width


def tiny_vit() -> nn.Module:
    return torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=HEADS, hidden_dim=E, mlp_dim=MLP,
        num_classes=10)


def test_tiny_vit_counts_attention_projections_and_products():
    counts = count_model(tiny_vit(), (3, 32, 32))
    patches = E * 16 * 3 * 8 * 8
    per_layer = attention_macs(L, L, E) + 2 * L * E * MLP
    assert counts.macs == patches + 2 * per_layer + E * 10
    attention = [v for k, v in counts.macs_per_node.items() if k.endswith("self_attention")]
    assert attention == [attention_macs(L, L, E)] * 2


def test_per_layer_rows_list_attention_with_its_output_shape():
    from kdsearch.cli.flops import layer_rows

    rows = layer_rows(tiny_vit(), (3, 32, 32))
    attention = [row for row in rows if row["type"] == "MultiheadAttention"]
    assert [row["output"] for row in attention] == [[L, E]] * 2  # the tuple's first item
    assert attention[0]["macs"] == attention_macs(L, L, E)
    assert attention[0]["params"] == 4 * E * E + 4 * E


def test_flop_counter_sees_attention_in_eval_mode():
    """FlopCounterMode alone misses nn.MultiheadAttention's fused inference path and the CPU
    attention kernel; kdsearch's FLOPs and untraced MACs include them (2 FLOPs per MAC)."""
    model = tiny_vit().eval()
    counts = count_model(model, (3, 32, 32))
    assert counts.flops == 2 * counts.macs  # only conv, linear and products in this model
    assert count_untraced(model, (3, 32, 32)).macs == counts.macs
    assert torch.backends.mha.get_fastpath_enabled()  # restored after counting
    with flop_counter():
        assert not torch.backends.mha.get_fastpath_enabled()


class Attention(nn.Module):
    """Self-attention written out: a matmul pair, or scaled_dot_product_attention."""

    def __init__(self, fused: bool):
        super().__init__()
        self.fused = fused
        self.qkv, self.proj = nn.Linear(E, 3 * E), nn.Linear(E, E)

    def forward(self, x):
        q, k, v = self.qkv(x).reshape(x.shape[0], L, 3, HEADS, E // HEADS).permute(
            2, 0, 3, 1, 4)
        if self.fused:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = (q @ k.transpose(-2, -1)).softmax(-1).matmul(v)
        return self.proj(out.transpose(1, 2).reshape(x.shape[0], L, E))


class Tokens(nn.Module):
    def __init__(self, block: nn.Module):
        super().__init__()
        self.embed, self.block = nn.Linear(8, E), block

    def forward(self, x):  # x: [batch, 1, L, 8]
        return self.block(self.embed(x.squeeze(1)))


@pytest.mark.parametrize("fused", [False, True])
def test_written_out_attention_counts_both_products(fused):
    counts = count_model(Tokens(Attention(fused)), (1, L, 8))
    assert counts.macs == L * 8 * E + attention_macs(L, L, E)
    assert counts.flops == 2 * counts.macs


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_with_other_key_and_value_widths(batch_first):
    class Cross(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(E, HEADS, kdim=8, vdim=6,
                                              batch_first=batch_first)

        def forward(self, x):  # x: [batch, 1, L, 8]
            tokens = x.squeeze(1)
            query = torch.ones_like(tokens[:, :5, :1]).expand(-1, -1, E)
            key, value = tokens, tokens[..., :6]
            if not batch_first:
                query, key, value = (t.transpose(0, 1) for t in (query, key, value))
            return self.attn(query, key, value)[0].flatten(1)

    counts = count_model(Cross(), (1, L, 8))
    assert counts.macs == attention_macs(5, L, E, kdim=8, vdim=6)


def test_an_opaque_leaf_block_and_a_wrapped_function_are_counted():
    """What fx does not look into is run once on meta tensors: a registered leaf holding a
    matmul, and a function fx keeps as one node (torch.fx.wrap)."""

    @register_leaf_module
    class Mixer(nn.Module):  # its forward is not traceable, so it must stay a leaf
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(E, E))

        def forward(self, x):
            return x @ self.weight if x.sum() > -1e9 else x

    model = Tokens(nn.Sequential(Mixer(), nn.GELU()))
    counts = count_model(model, (1, L, 8))
    assert counts.macs == L * 8 * E + L * E * E
    traced = torch.fx.symbolic_trace(_WrappedModel())
    assert any(n.target is wrapped_products for n in traced.graph.nodes)
    assert count_model(_WrappedModel(), (1, L, 8)).macs == 2 * L * L * 8


def wrapped_products(x: torch.Tensor) -> torch.Tensor:
    return (x @ x.transpose(-2, -1)) @ x  # two products, L x L x 8 MACs each


torch.fx.wrap("wrapped_products")


class _WrappedModel(nn.Module):
    def forward(self, x):
        return wrapped_products(x.squeeze(1))


# (weights enum of torchvision, model name): what torchvision publishes as "GFLOPS" (MACs)
PUBLISHED = {"vit_b_16": "ViT_B_16_Weights.IMAGENET1K_V1",
             "swin_t": "Swin_T_Weights.IMAGENET1K_V1",
             "convnext_tiny": "ConvNeXt_Tiny_Weights.IMAGENET1K_V1"}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_torchvision_published_macs_within_one_percent(name, capsys):
    published = torchvision.models.get_weight(PUBLISHED[name]).meta["_ops"] * 1e9
    assert main(["flops", f"torchvision:{name}", "--input-size", "3,224,224", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["macs"] == pytest.approx(published, rel=0.01)
    assert report["counted"] == "torch.fx trace"
