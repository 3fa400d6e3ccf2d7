"""ImplicitAttentionExplorer: controls change the outputs; bad input shows inside the widget."""

import pytest
import torch

from workbench.analysis.tokens import printable_tokenizer
from workbench.models import HookedRecurrentLM, RecurrentConfig
from workbench.widgets.implicit_attention import ImplicitAttentionExplorer

TEXT = "x = f(a, [b])\n"


def make(family: str, n_layers: int = 1):
    tokenizer = printable_tokenizer()
    torch.manual_seed(0)
    model = HookedRecurrentLM(RecurrentConfig(family=family, n_layers=n_layers, d_model=8, d_hidden=8,
                                              d_vocab=len(tokenizer.chars), d_state=4))
    model.tokenizer = tokenizer
    return model


@pytest.fixture()
def explorer():
    return ImplicitAttentionExplorer({"s6": make("s6", 2), "lstm": make("lstm"), "elman": make("elman")},
                                     TEXT)


def test_first_render_shows_the_last_query_row_and_the_map(explorer):
    assert explorer.error.value == ""
    assert explorer.query_select.value == len(TEXT) - 1
    assert explorer.row.value.count('class="wb-c"') == len(TEXT)
    assert explorer.map_figure.data[0].z.shape == (len(TEXT), len(TEXT))


def test_controls_change_layer_mode_channel_and_query(explorer):
    explorer.layer_select.value = 1
    explorer.mode_select.value = "paper"
    assert "layer 1 (paper mode" in explorer.map_figure.layout.title.text
    explorer.aggregate_select.value = "channel"
    explorer.channel_select.value = 5
    assert "channel 5" in explorer.map_figure.layout.title.text
    before = explorer.row.value
    explorer.query_select.value = 4
    assert explorer.row.value != before and "query 4" in explorer.row.value
    explorer.model_select.value = "lstm"
    assert list(explorer.mode_select.options) == ["exact"] and explorer.layer_select.max == 0
    assert explorer.error.value == ""


@pytest.mark.parametrize("text, message", [("", "empty"), ("naïve", "not in the vocabulary"),
                                           ("x" * 500, "max_chars=400")])
def test_bad_text_shows_a_message_inside_the_widget_and_recovers(explorer, text, message):
    explorer.text_input.value = text
    assert message in explorer.error.value and explorer.row.value == ""
    explorer.text_input.value = "ok(1)\n"
    assert explorer.error.value == "" and explorer.row.value


def test_unsupported_family_and_memory_budget_show_inside():
    explorer = ImplicitAttentionExplorer({"elman": make("elman")}, TEXT)
    assert "no implicit-attention form" in explorer.error.value
    small = ImplicitAttentionExplorer(make("s6"), TEXT * 3, memory_budget_bytes=20_000)
    small.aggregate_select.value = "channel"
    assert "memory budget" in small.error.value


def test_transformers_mamba2_rwkv_and_griffin_offer_their_modes_channels_and_layers():
    """Models of the new families (tiny random `transformers` configs with a character tokenizer)."""
    transformers = pytest.importorskip("transformers")
    import workbench

    tokenizer = printable_tokenizer()
    vocab = len(tokenizer.chars)
    torch.manual_seed(0)
    mamba2 = workbench.from_transformers(transformers.Mamba2ForCausalLM(transformers.Mamba2Config(
        vocab_size=vocab, hidden_size=16, state_size=4, num_hidden_layers=2, expand=2, num_heads=4,
        head_dim=8, n_groups=2, conv_kernel=4)).eval())
    rwkv = workbench.from_transformers(transformers.RwkvForCausalLM(transformers.RwkvConfig(
        vocab_size=vocab, hidden_size=16, num_hidden_layers=2, attention_hidden_size=24,
        intermediate_size=32)).eval())
    griffin = workbench.from_transformers(transformers.RecurrentGemmaForCausalLM(transformers.RecurrentGemmaConfig(
        vocab_size=vocab, hidden_size=16, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
        num_hidden_layers=3, lru_width=16, attention_window_size=4, conv1d_width=4,
        block_types=["recurrent", "recurrent", "attention"])).eval())
    for model in (mamba2, rwkv, griffin):
        model.tokenizer = tokenizer
    explorer = ImplicitAttentionExplorer({"mamba2": mamba2, "rwkv": rwkv, "griffin": griffin}, TEXT)
    assert explorer.error.value == "" and list(explorer.mode_select.options) == ["exact", "normed", "paper"]
    assert explorer.channel_select.max == 31
    explorer.mode_select.value = "normed"
    assert "normed mode" in explorer.map_figure.layout.title.text
    explorer.model_select.value = "rwkv"
    assert list(explorer.mode_select.options) == ["exact"] and explorer.channel_select.max == 23
    explorer.aggregate_select.value = "channel"
    explorer.channel_select.value = 23
    assert explorer.error.value == "" and "channel 23" in explorer.map_figure.layout.title.text
    explorer.model_select.value = "griffin"
    explorer.layer_select.value = 2  # local attention: its pattern, zero outside the window of 4
    assert explorer.error.value == "" and list(explorer.mode_select.options) == ["exact", "paper"]
    z = explorer.map_figure.data[0].z
    assert z[len(TEXT) - 1][0] == 0 and z[len(TEXT) - 1][len(TEXT) - 1] != 0
