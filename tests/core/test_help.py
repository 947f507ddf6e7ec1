"""Help a new user can learn from: defaults shown, an example per command, --version, one
default study, distinct flag names with the old spellings still accepted."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from tracker.cli import build_parser, main


def _commands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield words, parser
        return
    for name, child in subs[0].choices.items():
        yield from _commands(child, (*words, name))


COMMANDS = [words for words, _ in _commands(build_parser())]


def _help(*words: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        main([*words, "--help"])
    assert stop.value.code == 0
    return out.getvalue()


@pytest.mark.parametrize("words", COMMANDS, ids=" ".join)
def test_every_command_shows_an_example_of_itself(words: tuple[str, ...]):
    text = _help(*words)
    assert "example:" in text
    example = text.split("example:", 1)[1]
    assert f"tracker {' '.join(words)}" in example or (
        words == ("enqueue", "study") and "tracker enqueue examples/demo.toml" in example
    )


def test_help_shows_the_defaults_of_options_without_their_own_words():
    text = " ".join(_help("enqueue", "model").split())
    for shown in ("--lr LR (default: 0.1)", "--epochs EPOCHS (default: 10)",
                  "--batch-size BATCH_SIZE (default: 128)", "(default: sgd)"):  # fmt: skip
        assert shown in text, shown
    assert "--augment CIFAR augmentation (crop + flip)" in text  # a switch has no default shown


def test_version():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and out.getvalue().startswith("tracker ")


def test_one_default_study_for_every_verb():
    parser = build_parser()
    defaults = {}
    for words, command in _commands(parser):
        for action in command._actions:
            if "--study" in action.option_strings and action.default is not None:
                defaults[" ".join(words)] = action.default
    assert {"enqueue noop", "enqueue model", "enqueue levelset", "enqueue ensemble",
            "import h5", "train"} <= set(defaults)  # fmt: skip
    assert set(defaults.values()) == {"default"}, defaults


@pytest.mark.parametrize(
    ("words", "new", "old", "dest", "value"),
    [
        (["work"], "--task-kind", "--kind", "kind", ["noop"]),
        (["plot", "surface", "1"], "--plot-kind", "--kind", "kind", ["contour"]),
        (["enqueue", "surface", "--model", "1", "--x", "0:1:3"], "--direction-seed", "--seed",
         "seed", 7),
        (["enqueue", "surface", "--model", "1", "--x", "0:1:3"], "--y-direction-seed", "--y-seed",
         "y_seed", 7),
        (["train", "--arch", "mlp", "--dataset", "digits"], "--train-seed", "--seed", "seed", 7),
        (["enqueue", "retrain", "--model", "1"], "--direction-seeds", "--seeds", "seeds", "0-1"),
        (["enqueue", "morse", "--ensemble", "1"], "--gp-seed", "--seed", "seed", 7),
    ],
)
def test_distinct_names_with_the_old_spelling_kept(words, new, old, dest, value):
    parser = build_parser()
    text = value[0] if isinstance(value, list) else str(value)
    for flag in (new, old):
        args = parser.parse_args([*words, flag, text])
        assert getattr(args, dest) == value


def test_json_flag_is_on_every_command():
    for words, command in _commands(build_parser()):
        flags = {s for a in command._actions for s in a.option_strings}
        assert "--json" in flags, words
