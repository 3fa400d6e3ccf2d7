"""`HookedLanguageModel`: what every hooked language model shares, native or a `transformers` adapter.

Token ids in, next-token logits out, through `HookedRecurrentBase`'s blocks: tokenisation
(`to_tokens`, `to_str_tokens`), the checks on token inputs, the forward pass with its loss, and
generation. `HookedRecurrentLM` (the workbench's own models) and `HookedTransformersLM`
(`workbench.adapters`) subclass it, so both take the same `forward` keywords and raise the same errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.errors import EmptyInputError, MissingTokenizerError
from workbench.models.config import RecurrentConfig
from workbench.models.generation import generate as generate_tokens
from workbench.models.hook_point import ScopedHookPoint
from workbench.models.hooked import HookedRecurrentBase, ModelState, NamesFilter, _is_hooked
from workbench.models.paths import ExecutionPath
from workbench.models.specs import LOGITS, RESID, HookSpec
from workbench.models.streaming import StreamedScore, WindowSink
from workbench.models.streaming import score as score_windows
from workbench.models.tl_surface import TransformerLensSurface

RETURN_TYPES: tuple[str | None, ...] = ("logits", "loss", "both", None)  # TransformerLens's


class HookedLanguageModel(TransformerLensSurface, HookedRecurrentBase):
    """Embedding, blocks, final norm, unembedding: subclasses register `embed`, `hook_embed`,
    `unembed` and `hook_logits`, then call `setup()`."""

    # whether a left-padded prompt batch generates each row exactly as that row alone would
    generate_with_padding = False
    # why `forward` refuses an attention mask with padding (one of all ones is accepted); None: the
    # blocks read the mask
    padding_refusal: str | None = "this model has no attention mask (padding enters the recurrent state)"
    # how to attach a tokenizer, said when `to_tokens` finds none
    tokenizer_hint = "load it with workbench.load(...)"

    def _embed_spec(self) -> HookSpec:
        return RESID, "token embedding"

    def _output_spec(self) -> HookSpec:
        return LOGITS, "next-token logits"

    # ----- tokens ----------------------------------------------------------------------------
    def to_tokens(self, text: str | Sequence[str], prepend_bos: bool | None = None, padding_side: str | None = None,
                  move_to_device: bool = True, truncate: bool = True, unknown: str | None = None) -> Tensor:
        """Text (or equal-length texts) -> token ids [batch, pos] with the attached tokenizer.

        TransformerLens's keywords are accepted: `prepend_bos=True` prepends the tokenizer's BOS token
        where it has one (a character model has none, and says so); None or False prepends nothing.
        `unknown="map"` maps characters outside the vocabulary to its unknown token (subword
        tokenizers map everything already). `padding_side` and `truncate` do not apply: texts must
        already be of equal length, and nothing is cut."""
        if self.tokenizer is None:
            raise MissingTokenizerError(f"this model has no tokenizer, so it cannot read the text "
                                        f"{_short_text(text)}; pass token ids, or {self.tokenizer_hint}")
        if padding_side is not None:
            raise ValueError("padding_side: texts in one batch must have equal token lengths (no padding is "
                             "added); tokenize rows separately, or pad yourself and pass attention_mask")
        tokens = self._encode(text, unknown)
        if prepend_bos:
            tokens = torch.cat([torch.full_like(tokens[:, :1], self._bos_id()), tokens], dim=1)
        return tokens.to(self.device) if move_to_device else tokens

    def _bos_id(self) -> int:
        """The tokenizer's BOS id; a tokenizer without one raises (character models have none)."""
        inner = getattr(self.tokenizer, "tokenizer", None)  # a Hugging Face tokenizer, for adapters
        bos = getattr(inner, "bos_token_id", None) if inner is not None else None
        if bos is None:
            raise ValueError("prepend_bos=True: this model's tokenizer has no BOS token (a character model "
                             "starts from its initial state, not a BOS token); leave prepend_bos unset")
        return int(bos)

    def _encode(self, text: str | Sequence[str], unknown: str | None = None) -> Tensor:
        """Text -> ids [batch, pos] with a tokenizer that encodes one text to ids [pos]."""
        texts = [text] if isinstance(text, str) else list(text)
        if not texts:
            raise EmptyInputError("no text given")
        rows = [self.tokenizer.encode(t) if unknown is None else self.tokenizer.encode(t, unknown=unknown)
                for t in texts]
        if len({len(r) for r in rows}) != 1:
            raise ValueError("texts in one batch must have the same length in tokens")
        return torch.stack(rows)

    def to_str_tokens(self, text_or_tokens: str | Tensor) -> list[str]:
        """One display string per token (of the first row), for plots."""
        tokens = self.to_tokens(text_or_tokens) if isinstance(text_or_tokens, str) else text_or_tokens
        if tokens.ndim == 2:
            tokens = tokens[0]  # [pos]
        return list(self.tokenizer.to_strings(tokens))

    def _as_tokens(self, inputs: Tensor | str | Sequence[str]) -> Tensor:
        """Text or ids [pos] / [batch, pos] -> ids [batch, pos], checked: non-empty, integer, in vocabulary."""
        if isinstance(inputs, str):
            return self.to_tokens(inputs)
        if isinstance(inputs, (list, tuple)):
            if not all(isinstance(text, str) for text in inputs):
                raise TypeError("inputs: a list must hold texts (str); for token ids pass a tensor, "
                                f"torch.tensor(ids); got a list of {sorted({type(t).__name__ for t in inputs})}")
            return self.to_tokens(inputs)
        if not isinstance(inputs, Tensor):
            raise TypeError(f"inputs must be text, a list of texts or token ids (a tensor [batch, pos] or [pos]); "
                            f"got {type(inputs).__name__}")
        if inputs.ndim not in (1, 2):
            raise ValueError(f"token ids must have shape [pos] or [batch, pos]; got shape {tuple(inputs.shape)}")
        tokens = inputs if inputs.ndim == 2 else inputs[None]  # [batch, pos]
        if tokens.shape[0] == 0 or tokens.shape[1] == 0:
            raise EmptyInputError(f"empty input of shape {tuple(tokens.shape)}; give at least one token")
        if tokens.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"tokens must be integer ids (torch.int64 or torch.int32), got {tokens.dtype}")
        if tokens.device != self.device:
            raise ValueError(f"token ids are on {tokens.device}, the model on {self.device}; "
                             f"move them with .to(model.device)")
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= self.cfg.d_vocab:
            raise ValueError(f"token ids must lie in [0, {self.cfg.d_vocab}), got [{low}, {high}]")
        return tokens.long()  # int32 ids too: the loss's targets must be int64

    def _batch_and_length(self, inputs: Any) -> tuple[int, int]:
        tokens = self._as_tokens(inputs)
        return tokens.shape[0], tokens.shape[1]

    # ----- running ---------------------------------------------------------------------------
    def embed_tokens(self, tokens: Tensor) -> Tensor:
        """tokens [batch, pos] -> the residual stream's start [batch, pos, d_model] (before `hook_embed`)."""
        return self.embed(tokens)

    def _padding_mask(self, mask: Tensor | None) -> Tensor | None:
        """The mask the blocks get: [batch, pos] where they read one, else None (refusing padding)."""
        if mask is None or self.padding_refusal is None:
            return mask
        if not bool(torch.all(mask == 1)):
            raise ValueError(f"{self.padding_refusal}; run rows of unequal length separately")
        return None

    def forward(
        self,
        inputs: Tensor | str | Sequence[str] | None = None,
        initial_state: ModelState | None = None,
        return_state: bool = False,
        path: ExecutionPath | None = None,
        return_type: str | None = "logits",
        attention_mask: Tensor | None = None,
        loss_per_token: bool = False,
        *,
        input: Tensor | str | Sequence[str] | None = None,  # noqa: A002  (TransformerLens's name)
        prepend_bos: bool | None = None,
        stop_at_layer: int | None = None,
    ) -> Any:
        """tokens [batch, pos] (or text) -> logits [batch, pos, d_vocab] (and the final state per layer).

        `return_type` is TransformerLens's: "logits", "loss" (the mean next-token cross-entropy in
        nats; per token, [batch, pos − 1], with `loss_per_token=True`), "both" (logits, loss) or None
        (returns None and skips the logits unless `hook_logits` is hooked); anything else raises.
        `input=` is accepted for `inputs`, as TransformerLens names it; `prepend_bos` applies to text
        inputs as in `to_tokens`. `stop_at_layer=k` (TransformerLens's, which SAELens's activation
        store passes) runs blocks 0..k-1 only and returns the residual stream after them
        [batch, pos, d_model], unnormalised; a negative k counts from the end. The whole call's peak memory
        is checked against the budget first (`estimate_memory`); `attention_mask` [batch, pos] (1 =
        token, 0 = padding) is used as the wrapped model uses it (models that cannot honour padding
        accept only a mask of ones).
        """
        if return_type not in RETURN_TYPES:
            raise ValueError(f"return_type must be one of {', '.join(map(repr, RETURN_TYPES))}; got {return_type!r}")
        if input is not None:
            if inputs is not None:
                raise TypeError("give the tokens once: as the first argument or as input=, not both")
            inputs = input
        if inputs is None:
            raise TypeError("inputs: forward needs text, a list of texts or token ids (model(tokens) or "
                            "model(input=tokens)); got NoneType")
        if prepend_bos and isinstance(inputs, (str, list, tuple)):
            inputs = self.to_tokens(inputs, prepend_bos=True)
        tokens = self._as_tokens(inputs)
        if stop_at_layer is not None:
            return self._run_until(tokens, stop_at_layer, initial_state, path, attention_mask, return_state)
        self._guard_forward(tokens.shape[0], tokens.shape[1], "loss" if return_type == "both" else return_type,
                            path, initial_state)
        mask = self._padding_mask(attention_mask)
        resid = self.hook_embed(self.embed_tokens(tokens))  # [batch, pos, d_model]
        resid, states = self.run_blocks(resid, initial_state, path, mask)
        if return_type is None and not _is_hooked(self.hook_logits):  # nothing reads the logits
            return (None, states) if return_state else None
        # [batch, pos, d_vocab], back on the tokens' device where a device_map put the head elsewhere
        logits = self.hook_logits(self.unembed(resid).to(tokens.device))
        out: Any
        if return_type in ("loss", "both"):
            if tokens.shape[1] < 2:
                raise ValueError("the loss needs at least two tokens")
            per_token = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
            loss = per_token.view(tokens.shape[0], -1) if loss_per_token else per_token.mean()  # [batch, pos-1] or []
            out = loss if return_type == "loss" else (logits, loss)
        elif return_type is None:
            out = None
        else:
            out = logits
        return (out, states) if return_state else out

    def _run_until(
        self, tokens: Tensor, stop_at_layer: int, initial_state: ModelState | None, path: ExecutionPath | None,
        attention_mask: Tensor | None, return_state: bool,
    ) -> Any:
        """The residual stream after the first `stop_at_layer` blocks (TransformerLens's `stop_at_layer`)."""
        n_layers = len(self.blocks)
        valid = isinstance(stop_at_layer, int) and not isinstance(stop_at_layer, bool)
        if not valid or not -n_layers < stop_at_layer <= n_layers or stop_at_layer == 0:
            raise ValueError(f"stop_at_layer must be an int in 1..{n_layers} (or -{n_layers - 1}..-1, counted from "
                             f"the end), the number of blocks to run; got {stop_at_layer!r}")
        stop = stop_at_layer % n_layers or n_layers
        self._guard_forward(tokens.shape[0], tokens.shape[1], None, path, initial_state)
        resid = self.hook_embed(self.embed_tokens(tokens))  # [batch, pos, d_model]
        state = None if initial_state is None else initial_state[:stop]
        resid, states = self.run_blocks(resid, state, path, self._padding_mask(attention_mask), stop_at_layer=stop)
        return (resid, states) if return_state else resid

    def score(
        self, inputs: Tensor | str | Sequence[str], *, window: int | None = None,
        names_filter: NamesFilter = None, sink: WindowSink | None = None,
        initial_state: ModelState | None = None, path: ExecutionPath | None = None,
        memory_budget_bytes: int | None = None, progress: bool = False,
    ) -> StreamedScore:
        """Loss and per-token log-probs of a long input in bounded memory: windows of `window`
        positions (None: the largest the budget allows) with the state carried, hooks in
        `names_filter` streamed to `sink(start, cache)`. See `workbench.models.streaming.score`."""
        return score_windows(self, inputs, window=window, names_filter=names_filter, sink=sink,
                             initial_state=initial_state, path=path,
                             memory_budget_bytes=memory_budget_bytes, progress=progress)

    # ----- generation ------------------------------------------------------------------------
    def generate(
        self,
        prompt: str | Tensor,
        max_new_tokens: int = 100,
        temperature: float = 1.0,
        greedy: bool = False,
        seed: int | None = 0,
        path: ExecutionPath | None = None,
        return_text: bool | None = None,
        attention_mask: Tensor | None = None,
    ) -> str | Tensor:
        """Continue `prompt` (text, or ids [batch, pos]) by `max_new_tokens` tokens.

        The prompt runs once; then each new token steps the carried recurrent state (and Griffin's
        sliding-window keys and values), so the cost is linear in the length and every hook fires once
        per new token with `[batch, 1, ...]` tensors: steering and patching hooks change what is
        generated. `greedy=True` takes the argmax; otherwise tokens are drawn at `temperature` from a
        generator seeded with `seed` (None: the global generator). No stop at an end-of-text token.
        `attention_mask` [batch, pos] (1 = token) allows a left-padded batch where the family ignores
        padding exactly (Mamba, FalconMamba, Mamba2). Returns text for a text prompt, else ids
        [batch, pos + max_new_tokens]. See `workbench.models.generation.generate`.
        """
        tokens = self._as_tokens(prompt)  # [batch, pos]
        prompt_kwargs = {}
        if attention_mask is not None:
            self._check_generation_mask(attention_mask, tokens)
            prompt_kwargs["attention_mask"] = attention_mask
        as_text = isinstance(prompt, str) if return_text is None else return_text
        return generate_tokens(self, tokens, max_new_tokens, temperature, greedy, seed, path, as_text,
                               prompt_kwargs=prompt_kwargs)

    def _check_generation_mask(self, mask: Tensor, tokens: Tensor) -> None:
        """A mask for generation must match the prompt, pad on the left only, and suit the family."""
        if tuple(mask.shape) != tuple(tokens.shape):
            raise ValueError(f"attention_mask has shape {tuple(mask.shape)}, the prompt {tuple(tokens.shape)}")
        if bool((mask == 1).all()):
            return
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("attention_mask must hold only 0 (padding) and 1 (token)")
        if not bool(self.generate_with_padding):
            raise ValueError(
                f"{type(self).__name__} cannot generate from a padded batch: its recurrence reads the "
                "padding, so padded rows would continue differently from the same prompts alone; "
                "generate each prompt on its own (or group prompts of equal length)")
        if bool((mask[:, 1:] < mask[:, :-1]).any()):
            raise ValueError("generation needs left padding (zeros before the tokens); the attention_mask "
                             "has padding after a token in some row")
        if bool((mask.sum(1) == 0).any()):
            raise EmptyInputError("a row of the attention_mask is all padding; give every row at least one token")


def _short_text(text: object, width: int = 40) -> str:
    """repr of the text a caller gave, cut to `width` characters."""
    shown = repr(text)
    return shown if len(shown) <= width else shown[: width - 3] + "..."


class HookedRecurrentLM(HookedLanguageModel):
    """A recurrent language model: embedding, recurrent blocks, final norm, unembedding.

    >>> from workbench.models import HookedRecurrentLM, RecurrentConfig
    >>> model = HookedRecurrentLM(RecurrentConfig(family="lstm", n_layers=1, d_model=8,
    ...                                           d_hidden=8, d_vocab=5))
    >>> logits, cache = model.run_with_cache(torch.tensor([[1, 2, 3]]))
    >>> tuple(cache["blocks.0.mixer.hook_c"].shape)
    (1, 3, 8)
    """

    def __init__(self, cfg: RecurrentConfig):
        if cfg.d_vocab <= 0:
            raise ValueError("a language model needs d_vocab > 0")
        super().__init__(cfg)
        self.embed = nn.Embedding(cfg.d_vocab, cfg.d_model)
        self.hook_embed = ScopedHookPoint()
        self.unembed = nn.Linear(cfg.d_model, cfg.d_vocab)
        if cfg.tie_embeddings:
            self.unembed.weight = self.embed.weight
        self.hook_logits = ScopedHookPoint()
        self.setup()
