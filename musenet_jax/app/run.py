"""A trained model, ready for inference: its config, its model with restored parameters, its tokenizer.

It comes from any source `--checkpoint` names (`app/sources.py`): a training run, of which only the
`params` item of a checkpoint is read, or an exported bundle (`app/bundle.py`), local, on a bucket or on
the Hugging Face Hub; with no source, the bundled model. Parameters land on the shardings of a model built
from the saved config; no optimizer, train state or data iterator is built.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
from flax import nnx

from musenet_jax.app import bundle
from musenet_jax.app.sources import Source, resolve_source
from musenet_jax.config import Config, with_overrides
from musenet_jax.critic.scoring import Critic
from musenet_jax.critic.store import load_critic
from musenet_jax.data.note_facts import NoteFacts, load_note_facts
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.encoding.vocab import Vocabulary
from musenet_jax.errors import UserError
from musenet_jax.model.config import MeshConfig
from musenet_jax.model.sharding import make_mesh
from musenet_jax.model.transformer import MuseNet, abstract_params
from musenet_jax.sample.config import SampleConfig
from musenet_jax.sample.grammar import GrammarTables
from musenet_jax.sample.sampler import Sampler
from musenet_jax.train.checkpoint import (
    RunCheckpoints,
    check_fingerprint,
    choose_step,
    restore_first_readable,
)

# Sections a user may change when using a trained run; the others define what its parameters mean.
RUN_OVERRIDABLE: tuple[str, ...] = ("data", "sample", "critic")


def warn(message: str) -> None:
    """Workflow warnings go to stderr, so stdout stays the command's result (e.g. `eval --json`)."""
    print(message, file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True, eq=False)
class Run:
    """One checkpoint of a training run, or a bundle, loaded for sampling, scoring or evaluation."""

    workdir: str  # the run's work dir or the bundle's folder (its critic and note facts live there)
    step: int
    cfg: Config
    model: MuseNet
    tokenizer: Tokenizer
    note_facts: NoteFacts | None  # the train split's pitch ranges and note lengths, when recorded
    kind: str = "run"  # "run" or "bundle"
    source: str = ""  # the --checkpoint as given (empty: the work dir itself)

    def sampler(self, settings: SampleConfig | None = None) -> Sampler:
        """A sampler with the run's `sample` settings (or `settings`: the co-composer's knobs per request)
        and, where switched on, the data's note rules."""
        sc = self.cfg.sample
        tables = GrammarTables.from_vocab(
            self.tokenizer.vocab,
            self.note_facts,
            pitch_range=sc.pitch_range_rule,
            pitch_margin=self.cfg.data.transpose_semitones,  # the model saw pieces transposed this far
            note_length=sc.note_length_rule,
            opening_note=sc.opening_note_rule,
            key_bias=sc.key_bias,
            motif_bias=sc.motif_bias,
            form_bias=sc.form_bias,
            onset_bias=sc.onset_bias,
        )
        settings = sc if settings is None else settings
        return Sampler(self.model, self.tokenizer, settings, tables, self._form_plans)

    @functools.cached_property
    def _form_plans(self) -> dict[str, Any]:
        """Each composer's form plans (grammar rule 13); where the rule is on and the facts predate plans,
        said once per run, not at every sampler the co-composer builds."""
        plans = dict(self.note_facts.composer_plans) if self.note_facts is not None else {}
        if self.cfg.sample.form_bias > 0 and not plans:
            warn(
                f"note: sample.form_bias is on but {self.source or self.workdir} keeps no form plans (its "
                "note facts predate them), so no passage is planned to come back; runs trained from now on "
                "record them"
            )
        return plans

    def critic(self) -> Critic | None:
        """The critic trained into this run or bundle, or None when there is none."""
        loaded = load_critic(self.workdir, self.model, self.tokenizer.vocab.fingerprint())
        return None if loaded is None else Critic(loaded[0], self.tokenizer)

    def trained_critic(self) -> Critic:
        """The run's critic, or one line saying to train it first."""
        critic = self.critic()
        if critic is None:
            raise UserError(f"no trained critic in {self.workdir}; run `musenet-jax critic train` first")
        return critic


def load_run(
    source: str | pathlib.Path | None,
    step: int | str = "latest",
    *,
    overrides: Sequence[str] = (),
    mesh: Any | None = None,
    say: Callable[[str], None] = warn,
) -> Run:
    """Loads `step` ("latest", "best" or a number) of the run or bundle `source` names (None: the bundled
    model), with `overrides` (`section.key=value` of the data, sample and critic sections) applied to its
    saved config. Without a `mesh` the model lands on one local device. A damaged "latest" or "best" step
    falls back to the newest readable one, said in one line; a damaged numbered step is refused."""
    resolved = resolve_source(source)
    mesh = mesh if mesh is not None else make_mesh(MeshConfig(), devices=jax.local_devices()[:1])
    if resolved.kind == "bundle":
        return _load_bundle(resolved, step, overrides, mesh)
    run = _load_checkpoint(resolved.path, step, overrides, mesh, say)
    return dataclasses.replace(run, source=resolved.given)


def _load_bundle(source: Source, step: int | str, overrides: Sequence[str], mesh: Any) -> Run:
    info = bundle.read_info(source.path)
    if str(step) not in ("latest", "best", str(info.step)):
        raise UserError(
            f"--checkpoint {source.given} is a bundle of step {info.step} only; drop --step {step}"
        )
    bundle.verify_checksums(source.path, source.given)
    cfg = with_overrides(bundle.read_config(source.path), overrides, RUN_OVERRIDABLE)
    tokenizer = Tokenizer(cfg.encoding)
    bundle.check_vocabulary(source.path, tokenizer, source.given)
    abstract_model, abstract = abstract_params(cfg.model, tokenizer.vocab, mesh)
    params = bundle.load_params(source.path, abstract)
    model = nnx.merge(nnx.graphdef(abstract_model), params)
    facts = load_note_facts(source.path)
    return Run(source.path, info.step, cfg, model, tokenizer, facts, kind="bundle", source=source.given)


def _load_checkpoint(
    workdir: str, step: int | str, overrides: Sequence[str], mesh: Any, say: Callable[[str], None]
) -> Run:
    checkpoints = RunCheckpoints(workdir, read_only=True)
    try:
        candidates = _candidates(checkpoints, step, workdir)

        def load(chosen: int) -> tuple[Config, Tokenizer, Any, Any]:
            meta = checkpoints.read_meta(chosen)
            cfg = with_overrides(meta.resolved_config(), overrides, RUN_OVERRIDABLE)
            tokenizer = Tokenizer(cfg.encoding)
            check_fingerprint(meta, tokenizer.vocab.fingerprint(), checkpoints.directory)
            abstract_model, abstract = abstract_params(cfg.model, tokenizer.vocab, mesh)
            params = checkpoints.restore(chosen, abstract_params=abstract)["params"]
            return cfg, tokenizer, abstract_model, params

        chosen, (cfg, tokenizer, abstract_model, params), _ = restore_first_readable(
            checkpoints, candidates, load, say=say
        )
    finally:
        checkpoints.close()
    model = nnx.merge(nnx.graphdef(abstract_model), params)
    return Run(str(workdir), chosen, cfg, model, tokenizer, load_note_facts(workdir))


def run_composers(
    source: str | pathlib.Path | None, step: int | str = "latest", *, say: Callable[[str], None] = warn
) -> tuple[str, ...]:
    """The composer labels the model `source` names was trained with (its vocabulary's), read without its
    arrays; for a run, a damaged "latest" or "best" falls back as `load_run` does."""
    resolved = resolve_source(source)
    if resolved.kind == "bundle":
        return Vocabulary(bundle.read_config(resolved.path).encoding).composers
    workdir = resolved.path
    checkpoints = RunCheckpoints(workdir, read_only=True)
    try:
        candidates = _candidates(checkpoints, step, workdir)
        _, meta, _ = restore_first_readable(checkpoints, candidates, checkpoints.read_meta, say=say)
    finally:
        checkpoints.close()
    return Vocabulary(meta.resolved_config().encoding).composers


def _candidates(checkpoints: RunCheckpoints, step: int | str, workdir: str | pathlib.Path) -> list[int]:
    """The step asked for; for "latest" or "best", the other saved steps after it, newest first."""
    first = choose_step(checkpoints, step, workdir)
    if isinstance(step, int) or str(step).isdigit():
        return [first]
    return [first, *sorted((s for s in checkpoints.all_steps() if s != first), reverse=True)]
