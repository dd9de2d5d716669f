"""The reward modules import one another one way: base.py, what a reward is, imports none of its builders."""

from tests.test_structure import find_cycle, import_graph


def test_no_import_cycle_among_the_reward_modules():
    graph = import_graph()
    rewards = {m: {d for d in deps if d.startswith("rest_cli.rewards")} for m, deps in graph.items()
               if m.startswith("rest_cli.rewards")}
    assert {"rest_cli.rewards.base", "rest_cli.rewards.build", "rest_cli.rewards.spec"} <= rewards.keys()
    assert find_cycle(rewards) == []


def test_base_imports_no_other_reward_module():
    assert {d for d in import_graph()["rest_cli.rewards.base"] if d.startswith("rest_cli.rewards")} == set()
