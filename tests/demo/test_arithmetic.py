"""The arithmetic demo (ReST-EM's): sums with checked answers, a systematic error in the training
references, and an untrained Llama with a tokenizer of one token per character."""

import json

import pytest

from rest_cli.demo.arithmetic import ArithmeticSpec, arithmetic_splits, carries
from rest_cli.errors import UsageError
from rest_cli.rewards.build import build_reward
from tests.helpers import read_jsonl, rest

SPEC = ArithmeticSpec(train=2000, valid=100, test=100, noise=0.5, seed=3)


@pytest.fixture(scope="module")
def splits():
    return arithmetic_splits(SPEC)


def test_sizes_and_no_problem_asked_twice(splits):
    assert {k: len(v) for k, v in splits.items()} == {"train": 2000, "valid": 100, "test": 100}
    sources = [r["src"] for records in splits.values() for r in records]
    assert len(set(sources)) == len(sources)
    assert all(10 <= int(a) <= 99 and 10 <= int(b) <= 99
               for a, b in (r["src"][:-1].split("+") for records in splits.values() for r in records))


def test_the_answer_is_the_sum_and_only_carrying_training_references_drop_the_carry(splits):
    for split, records in splits.items():
        for record in records:
            a, b = map(int, record["src"][:-1].split("+"))
            assert record["answer"] == a + b and record["src"] == f"{a}+{b}="
            if record["noise"] is None:
                assert record["ref"] == str(a + b)
            else:
                assert split == "train" and carries(a, b) and record["ref"] == str(a + b - 10)
    carrying = [r for r in splits["train"] if carries(*map(int, r["src"][:-1].split("+")))]
    share = sum(r["noise"] is not None for r in carrying) / len(carrying)
    assert 0.45 < share < 0.55  # noise=0.5 of the carrying problems


def test_the_answer_reward_scores_the_clean_references_1_and_the_noisy_0(splits):
    reward = build_reward("answer")
    records = [{**r, "hyp": r["ref"]} for r in splits["train"][:300]]
    scores = reward.score(records)
    assert [s == 1.0 for s in scores] == [r["noise"] is None for r in records]


def test_the_same_seed_gives_the_same_problems():
    assert arithmetic_splits(ArithmeticSpec(train=50, valid=5, test=5, seed=1)) == \
        arithmetic_splits(ArithmeticSpec(train=50, valid=5, test=5, seed=1))


def test_more_problems_than_the_operands_make_are_refused():
    with pytest.raises(UsageError, match="8100 distinct sums: use more --digits"):
        ArithmeticSpec(train=8000, valid=100, test=100)


@pytest.mark.subprocess
def test_demo_data_writes_the_splits_and_a_base_model_that_imports(tmp_path):
    pytest.importorskip("transformers")
    from rest_cli.models.hf.importing import import_model
    from rest_cli.models.hf.tokenizer import PromptFormat
    from rest_cli.models.modeldir import load_tokenizer

    result = rest("demo-data", str(tmp_path / "d"), "--task", "arithmetic", "--train", "40", "--valid", "5",
                  "--test", "5")
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl((tmp_path / "d" / "train.jsonl").read_bytes())) == 40
    config = json.loads((tmp_path / "d" / "base-model" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    policy = import_model(tmp_path / "d" / "base-model", tmp_path / "policy", PromptFormat())
    tokenizer = load_tokenizer(policy)
    assert tokenizer.prompts([{"src": "47+38="}], 64)[0].tokens == ["<s>", "4", "7", "+", "3", "8", "="]
    assert tokenizer.decode([tokenizer.encode(["85"])[0]]) == ["85"]
    wrong = rest("demo-data", str(tmp_path / "t"), "--digits", "3")
    assert wrong.returncode == 2 and b"--digits is an option of --task arithmetic" in wrong.stderr
