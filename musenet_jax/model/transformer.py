"""`MuseNet`: the decoder (embeddings, stacked sparse-attention blocks, final norm, output projection),
a critic head on the same trunk, and KV-cache sampling entry points.

Layers are stored stacked: `layers` is one `BlockGroup` whose parameters carry a leading `layers`
axis of n_layers / cycle groups. A group holds one block per position of the pattern cycle
(`interleave` with patterns (strided, fixed) -> 2 blocks, strided then fixed; `merge` and
`head_split` -> 1 block), so every scan step runs the same code. `scan_layers` picks between
`nnx.scan` over the groups (one compiled body; fast compiles at 72 layers) and a Python loop over
the same stacked parameters (so checkpoints work either way). `remat_policy` wraps each group in
`nnx.remat`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from musenet_jax.attention.backends import ATTENTION_RESIDUALS
from musenet_jax.attention.patterns import Pattern, layer_patterns
from musenet_jax.encoding.config import EncodingConfig
from musenet_jax.encoding.slots import NoteSlots, note_slots
from musenet_jax.encoding.vocab import Vocabulary
from musenet_jax.errors import UserError
from musenet_jax.model.cache import CACHE_AXES, KVCache
from musenet_jax.model.config import ModelConfig
from musenet_jax.model.embeddings import MusicEmbedding
from musenet_jax.model.modules import Block, layer_norm
from musenet_jax.model.sharding import constrain, logical_init, state_shardings
from musenet_jax.model.sounding import SoundingNotes, held_after, held_step, mask_silent_note_offs

_SAVE_ATTENTION = jax.checkpoint_policies.save_only_these_names(*ATTENTION_RESIDUALS)
# Every policy keeps the attention kernels' output and log-sum-exp (attention.ATTENTION_RESIDUALS), so the
# backward pass never runs a forward attention kernel again; what else is saved is the policy's choice.
REMAT_POLICIES: dict[str, Callable[..., bool]] = {
    "full": _SAVE_ATTENTION,  # recompute the rest of the group in the backward pass
    "dots_saveable": jax.checkpoint_policies.save_from_both_policies(
        jax.checkpoint_policies.dots_saveable, _SAVE_ATTENTION
    ),
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.save_from_both_policies(
        jax.checkpoint_policies.dots_with_no_batch_dims_saveable, _SAVE_ATTENTION
    ),
}


def pattern_cycle(cfg: ModelConfig) -> tuple[tuple[Pattern, ...], ...]:
    """Per-head-group patterns of each block position in a layer group (the repeating unit)."""
    cycle = len(cfg.patterns) if cfg.pattern_layout == "interleave" else 1
    kw = dict(stride=cfg.stride, summary=cfg.fixed_summary)
    return tuple(layer_patterns(cfg.patterns, cfg.pattern_layout, layer, **kw) for layer in range(cycle))


class BlockGroup(nnx.Module):
    """One block per position of the pattern cycle, applied in order."""

    def __init__(self, cfg: ModelConfig, cycle: tuple[tuple[Pattern, ...], ...], *, rngs: nnx.Rngs):
        self.blocks = nnx.List([Block(cfg, patterns, rngs=rngs) for patterns in cycle])

    def __call__(self, x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """x [B, T, d] -> (x, (k, v) each [blocks, B, T, H, Dh])."""
        ks, vs = [], []
        for block in self.blocks:
            x, k, v = block(x)
            ks.append(k)
            vs.append(v)
        return x, (jnp.stack(ks), jnp.stack(vs))

    def decode(
        self, x: jax.Array, k_cache: jax.Array, v_cache: jax.Array, position: jax.Array
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """One token through the group; caches [blocks, B, L, H, Dh]."""
        ks, vs = [], []
        for i, block in enumerate(self.blocks):
            x, k, v = block.decode(x, k_cache[i], v_cache[i], position)
            ks.append(k)
            vs.append(v)
        return x, (jnp.stack(ks), jnp.stack(vs))


class MuseNet(nnx.Module):
    """The MuseNet decoder. `time_step_ms` is the encoding's time grid (EncodingConfig.time_step_ms),
    needed to bucket `times` in milliseconds; pass `cfg.encoding.time_step_ms` when it is not the default."""

    def __init__(
        self,
        cfg: ModelConfig,
        vocab_size: int,
        *,
        rngs: nnx.Rngs,
        time_step_ms: int | None = None,
        note_slots: NoteSlots | None = None,
    ):
        self.cfg = cfg
        self.vocab_size = vocab_size
        time_step_ms = EncodingConfig().time_step_ms if time_step_ms is None else time_step_ms
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        self.embed = MusicEmbedding(cfg, vocab_size, time_step_ms, rngs=rngs)
        self.tracks_sounding = cfg.sounding_embedding or cfg.note_off_mask
        if self.tracks_sounding and note_slots is None:
            raise ValueError("model.sounding_embedding / note_off_mask need the vocabulary's note slots")
        self.note_slots = note_slots if self.tracks_sounding else None
        self.sounding = SoundingNotes(cfg, note_slots.count, rngs=rngs) if cfg.sounding_embedding else None
        cycle = pattern_cycle(cfg)
        self.num_groups = cfg.n_layers // len(cycle)
        self.per_group = len(cycle)

        @nnx.split_rngs(splits=self.num_groups)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def make_groups(rngs: nnx.Rngs) -> BlockGroup:
            return BlockGroup(cfg, cycle, rngs=rngs)

        self.layers = make_groups(rngs)
        self.final_norm = layer_norm(cfg, rngs=rngs)
        init = nnx.initializers.normal(stddev=0.02)
        zeros = nnx.initializers.zeros_init()
        self.head = nnx.Linear(
            cfg.d_model,
            vocab_size,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
            kernel_init=logical_init(init, ("embed", "vocab")),
            bias_init=logical_init(zeros, ("vocab",)),
        )
        self.critic = nnx.Linear(
            cfg.d_model,
            1,
            dtype=jnp.float32,
            param_dtype=param_dtype,
            rngs=rngs,
            kernel_init=logical_init(init, ("embed", None)),
            bias_init=logical_init(zeros, (None,)),
        )

    # --- layer stacking -------------------------------------------------------------------------

    def _over_groups(
        self, fn: Callable[..., Any], x: jax.Array, *per_group: jax.Array
    ) -> tuple[jax.Array, Any]:
        """x, out_g = fn(group_g, x, *slices_g) for each layer group in order; outputs stacked on axis 0."""
        if self.cfg.remat_policy != "none":
            fn = nnx.remat(fn, policy=REMAT_POLICIES[self.cfg.remat_policy])
        if self.cfg.scan_layers:
            in_axes = (0, nnx.Carry) + (0,) * len(per_group)
            return nnx.scan(fn, in_axes=in_axes, out_axes=(nnx.Carry, 0))(self.layers, x, *per_group)
        graphdef, state = nnx.split(self.layers)
        outs = []
        for g in range(self.num_groups):
            group = nnx.merge(graphdef, jax.tree.map(lambda a, g=g: a[g], state))
            x, out = fn(group, x, *(a[g] for a in per_group))
            outs.append(out)
        return x, jax.tree.map(lambda *o: jnp.stack(o), *outs)

    def _embed(self, inputs, positions, times, durations, held=None, mix=None) -> jax.Array:
        x = self.embed(inputs, positions, times, durations)
        if self.sounding is not None:
            x = x + self.sounding(held)
        if mix is not None:
            perm, lam = mix
            lam = lam.astype(x.dtype)[:, None, None]
            x = lam * x + (1 - lam) * jnp.take(x, perm, axis=0)
        return constrain(x, ("batch", "length", "embed"))

    def _logits(self, h: jax.Array, held: jax.Array | None) -> jax.Array:
        logits = self.head(self.final_norm(h).astype(h.dtype)).astype(jnp.float32)
        if self.cfg.note_off_mask:
            logits = mask_silent_note_offs(logits, held, self.note_slots)
        return constrain(logits, ("batch", "length", "vocab"))

    def _held(self, inputs: jax.Array, head: jax.Array | None) -> jax.Array | None:
        """int32 [B, T, slots]: the notes held after each token, when the model uses them."""
        return held_after(inputs, head, self.note_slots) if self.tracks_sounding else None

    def _trunk(self, inputs, times, durations, held, mix=None) -> jax.Array:
        positions = jnp.broadcast_to(jnp.arange(inputs.shape[1], dtype=jnp.int32), inputs.shape)
        x = self._embed(inputs, positions, times, durations, held, mix)
        x, _ = self._over_groups(lambda group, x: (group(x)[0], None), x)
        return x

    # --- public API -----------------------------------------------------------------------------

    def __call__(
        self,
        inputs: jax.Array,
        times: jax.Array,
        durations: jax.Array,
        *,
        sounding_head: jax.Array | None = None,
        mix=None,
    ) -> jax.Array:
        """inputs/times [B, T] int32, durations [B] -> float32 logits [B, T, V]. `sounding_head` [B, slots]:
        the notes held before the first token (a window cut from a piece; None: the piece's start).
        `mix=(perm_index [B], lam [B])`: mixup of the summed input embeddings, lam*e_b + (1-lam)*e_perm[b]."""
        held = self._held(inputs, sounding_head)
        return self._logits(self._trunk(inputs, times, durations, held, mix), held)

    def critic_logits(
        self, inputs: jax.Array, times: jax.Array, durations: jax.Array, loss_mask: jax.Array
    ) -> jax.Array:
        """One real-vs-generated logit per sequence [B]: mean of final-normed hidden states over
        `loss_mask` positions, then a linear map."""
        held = self._held(inputs, None)
        h = self.final_norm(self._trunk(inputs, times, durations, held)).astype(jnp.float32)
        mask = loss_mask.astype(jnp.float32)[..., None]
        pooled = (h * mask).sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1.0)
        return self.critic(pooled)[:, 0]

    def init_cache(self, batch: int, max_len: int) -> KVCache:
        """Empty cache for `batch` sequences of up to `max_len` (<= context) tokens."""
        if not 1 <= max_len <= self.cfg.context:
            raise UserError(f"cache length {max_len} must be in [1, model.context={self.cfg.context}]")
        head_dim = self.cfg.d_model // self.cfg.n_heads
        slots = self.note_slots.count if self.tracks_sounding else 0
        return KVCache.zeros(
            self.num_groups,
            self.per_group,
            batch,
            max_len,
            self.cfg.n_heads,
            head_dim,
            jnp.dtype(self.cfg.dtype),
            slots,
        )

    def prefill(
        self,
        inputs: jax.Array,
        times: jax.Array,
        durations: jax.Array,
        cache: KVCache,
        sounding_head: jax.Array | None = None,
    ) -> tuple[jax.Array, KVCache]:
        """Run the prompt [B, T0] through an empty cache: (logits [B, T0, V], cache with length T0).
        `sounding_head` as in `__call__`, for a window the sampler slid to."""
        if inputs.shape[1] > cache.max_len:
            raise UserError(f"prompt of {inputs.shape[1]} tokens does not fit a cache of {cache.max_len}")
        positions = jnp.broadcast_to(jnp.arange(inputs.shape[1], dtype=jnp.int32), inputs.shape)
        held = self._held(inputs, sounding_head)
        x = self._embed(inputs, positions, times, durations, held)
        x, (k, v) = self._over_groups(lambda group, x: group(x), x)
        k = jax.lax.dynamic_update_slice_in_dim(cache.k, k.astype(cache.k.dtype), 0, axis=3)
        v = jax.lax.dynamic_update_slice_in_dim(cache.v, v.astype(cache.v.dtype), 0, axis=3)
        last = cache.held if held is None else held[:, -1]
        length = jnp.asarray(inputs.shape[1], jnp.int32)
        return self._logits(x, held), _pinned(KVCache(k, v, length, last))

    def decode_step(
        self, token: jax.Array, time: jax.Array, durations: jax.Array, cache: KVCache
    ) -> tuple[jax.Array, KVCache]:
        """Append one token per sequence (token/time [B]) at position `cache.length`:
        (logits [B, V], cache)."""
        position = cache.length
        positions = jnp.broadcast_to(position, token.shape)[:, None]
        held = cache.held  # the counts come from the cache, not from the one token in view
        if self.tracks_sounding:
            held = held_step(token, held, self.note_slots)
        step_held = None if held is None or not self.tracks_sounding else held[:, None]
        x = self._embed(token[:, None], positions, time[:, None], durations, step_held)
        x, (k, v) = self._over_groups(
            lambda group, x, kc, vc: group.decode(x, kc, vc, position), x, cache.k, cache.v
        )
        return self._logits(x, step_held)[:, 0], _pinned(KVCache(k, v, position + 1, held))


def _pinned(cache: KVCache) -> KVCache:
    """The cache laid out like the activations that fill it (sharding.cache_shardings), step after step."""
    return cache.replace(k=constrain(cache.k, CACHE_AXES), v=constrain(cache.v, CACHE_AXES))


def build_model(model: ModelConfig, vocab: Vocabulary, seed: int = 0) -> MuseNet:
    """The MuseNet of a run: its model section over its vocabulary, on its encoding's time grid."""
    slots = note_slots(vocab) if model.sounding_embedding or model.note_off_mask else None
    return MuseNet(
        model, vocab.size, rngs=nnx.Rngs(seed), time_step_ms=vocab.cfg.time_step_ms, note_slots=slots
    )


def abstract_params(model: ModelConfig, vocab: Vocabulary, mesh: Mesh | None = None) -> tuple[MuseNet, Any]:
    """(the model without arrays, its parameter tree as ShapeDtypeStructs): nothing is allocated. On `mesh`,
    each carries its NamedSharding by the rules (what a checkpoint restores into)."""
    abstract = nnx.eval_shape(lambda: build_model(model, vocab))
    shapes = nnx.to_pure_dict(nnx.state(abstract, nnx.Param))
    if mesh is None:
        return abstract, shapes
    shardings = nnx.to_pure_dict(state_shardings(nnx.state(abstract, nnx.Param), mesh))
    placed = jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings
    )
    return abstract, placed
