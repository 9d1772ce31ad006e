"""A trained run records its composers' form plans with its note facts and its sampler draws from them; a run
whose facts predate plans says in one line that `sample.form_bias` has nothing to follow."""

from __future__ import annotations

import json
import shutil

from musenet_jax.app.run import load_run
from musenet_jax.data.note_facts import FACTS_FILE


def test_a_run_samples_with_its_plans_and_one_without_them_says_so(tiny_run, tmp_path, capsys):
    run = load_run(tiny_run, overrides=["sample.form_bias=4"])
    assert run.note_facts is not None and run.note_facts.composer_plans != ()
    sampler = run.sampler()
    assert sampler.tables.form_bias == 4.0 and sampler.plans == dict(run.note_facts.composer_plans)
    assert "form plans" not in capsys.readouterr().err

    older = tmp_path / "older_run"
    shutil.copytree(tiny_run, older)
    facts = json.loads((older / FACTS_FILE).read_text())
    del facts["composer_plans"]
    (older / FACTS_FILE).write_text(json.dumps(facts))
    run = load_run(older, overrides=["sample.form_bias=4"])
    assert run.sampler().plans == {} and run.sampler().plans == {}  # a co-composer builds one per request
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sample.form_bias is on but" in err and "keeps no form plans" in err
    load_run(older).sampler()  # the rule off: nothing to say
    assert "form plans" not in capsys.readouterr().err
