"""The [[retrain]] and [[topology]] sections of study files (tracker.studyfile)."""

from __future__ import annotations

import re

import pytest

from tracker import SpecError


@pytest.mark.parametrize(
    ("section", "needle"),
    [
        ('[[retrain]]\nmodel = "m"\nsteps = [0.5, 0.0]', "step size 0 is not positive"),
        ('[[retrain]]\nmodel = "m"\nseeds = "0-x"', "seeds '0-x'"),
        ('[[retrain]]\nmodel = "m"\nepochs = "ten"', "epochs in [[retrain]] number 1 must be int"),
        ('[[retrain]]\nmodel = "m"\nlearning_rate = 0.1', "unknown key 'learning_rate'"),
        ('[[retrain]]\nmodel = "other"', "names model 'other'"),
        ('[[topology]]\nmodel = "m"\nloss = "hinge"', "unknown loss 'hinge'"),
        ("[[topology]]\nknn = 5", "has no model"),
    ],
)
def test_study_file_sections_are_checked_before_anything_is_written(
    tmp_path, section: str, needle: str
) -> None:
    from tracker import studyfile as _studyfile

    path = tmp_path / "s.toml"
    path.write_text(
        'study = "s"\n[[model]]\nname = "m"\narchitecture = "mlp"\ndataset = "digits"\n' + section
    )
    with pytest.raises(SpecError, match=re.escape(needle)):
        _studyfile.load(path)


def test_study_file_sections_parse_to_requests(tmp_path) -> None:
    from tracker import studyfile as _studyfile
    from tracker.topology.rows import RetrainRequest, TopologyRequest

    path = tmp_path / "s.toml"
    path.write_text('study = "s"\n[[model]]\nname = "m"\narchitecture = "mlp"\ndataset = "digits"\n'
                    '[[retrain]]\nmodel = "m"\nseeds = "0-2,5"\nsteps = [0.25, 1]\nepochs = 3\n'
                    '[[topology]]\nmodel = "m"\nknn = 7\nlegacy = true\n')  # fmt: skip
    plan = _studyfile.load(path)
    assert plan.retrains == [RetrainRequest(model="m", seeds=(0, 1, 2, 5), steps=(0.25, 1.0), epochs=3)]  # fmt: skip
    assert plan.topologies == [TopologyRequest(model="m", knn=7, legacy=True)]
