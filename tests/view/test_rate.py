"""`rest rate`: the ratings database, the rating page (Flask's test client) and the report."""

import json
import sqlite3

import pytest

from rest_cli.correlation import spearman
from rest_cli.errors import InputError, UsageError
from rest_cli.view.rate import rate_app
from rest_cli.view.rating import RatingStore, a_on_left, items_of
from rest_cli.view.rating_report import Session, _per_item, human_eval_diff, markdown, rater_agreement, report
from tests.helpers import rest, write_jsonl

ORIGIN = {"Origin": "http://localhost"}


def outputs(n=12):
    a = [{"id": k, "src": f"quelle {k}", "ref": f"ref {k}", "hyp": f"A says {k}", "reward": 0.5}
         for k in range(n)]
    b = [{"id": k, "src": f"quelle {k}", "ref": f"ref {k}", "hyp": f"B <i>says</i> {k}", "reward": 0.7}
         for k in range(n)]
    return a, b


@pytest.fixture
def store(tmp_path):
    a, b = outputs()
    return RatingStore.create_or_open(tmp_path / "ratings.sqlite", items_of(a, b), ("a.jsonl", "b.jsonl"))


def client(store):
    return rate_app(store, ["localhost"]).test_client()


def test_a_rating_is_stored_as_the_rater_saw_it_and_durable_at_once(store, tmp_path):
    item = store.item(3)
    store.rate("ann", 3, left=5, right=2)
    with sqlite3.connect(tmp_path / "ratings.sqlite") as other:  # another connection: committed already
        (score_a, score_b, a_left), = other.execute("SELECT score_a, score_b, a_on_left FROM ratings")
    assert bool(a_left) == a_on_left("ann", 3)
    assert (score_a, score_b) == ((5, 2) if a_on_left("ann", 3) else (2, 5))
    assert item.hyp_a == "A says 3"


def test_the_left_side_is_a_fair_coin_per_rater_and_item():
    sides = [a_on_left("ann", k) for k in range(400)]
    assert 160 < sum(sides) < 240 and sides == [a_on_left("ann", k) for k in range(400)]
    assert sides != [a_on_left("bob", k) for k in range(400)]


def test_scores_outside_0_to_6_and_unknown_items_are_refused(store):
    for bad in ({"left": 7, "right": 1}, {"left": -1, "right": 1}):
        with pytest.raises(UsageError, match="scores are whole numbers from 0 to 6"):
            store.rate("ann", 0, **bad)
    with pytest.raises(UsageError, match="no item 99"):
        store.rate("ann", 99, 1, 1)
    assert store.ratings() == []


def test_reopening_resumes_and_other_outputs_are_refused(store, tmp_path):
    store.rate("ann", 0, 1, 2)
    store.close()
    a, b = outputs()
    again = RatingStore.create_or_open(tmp_path / "ratings.sqlite", items_of(a, b), ("a.jsonl", "b.jsonl"))
    assert again.rated("ann") == 1 and again.next_unrated("ann") == 1
    b[4]["hyp"] = "changed"
    with pytest.raises(UsageError, match="holds the ratings of other outputs"):
        RatingStore.create_or_open(tmp_path / "ratings.sqlite", items_of(a, b), ("a.jsonl", "b.jsonl"))


def test_a_file_that_is_not_a_ratings_database_is_left_alone(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    a, b = outputs()
    with pytest.raises(InputError, match="not a ratings database of rest rate"):
        RatingStore.create_or_open(notes, items_of(a, b), ("a", "b"))
    assert notes.read_text() == "my notes\n" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_the_page_shows_the_next_item_blind_and_escaped(store):
    web = client(store)
    assert 'name="rater"' in web.get("/").get_data(as_text=True)
    page = web.get("/?rater=ann").get_data(as_text=True)
    assert "ann: 0 of 12 rated" in page and "quelle 0" in page
    assert "B &lt;i&gt;says&lt;/i&gt; 0" in page and "<i>says" not in page
    left, right = ("A says 0", "B &lt;i&gt;says") if a_on_left("ann", 0) else ("B &lt;i&gt;says", "A says 0")
    assert page.index(left) < page.index(right)
    assert "a.jsonl" not in page and "b.jsonl" not in page  # nothing names the systems


def test_posting_a_rating_stores_it_and_moves_on(store):
    web = client(store)
    response = web.post("/rate", data={"rater": "ann", "item": 0, "left": 6, "right": 1}, headers=ORIGIN)
    assert response.status_code == 303 and response.headers["Location"].endswith("/?rater=ann")
    page = web.get("/?rater=ann").get_data(as_text=True)
    assert "ann: 1 of 12 rated" in page and "quelle 1" in page
    again = web.get("/?rater=ann&item=0").get_data(as_text=True)  # back to change it: scores shown
    assert again.count("checked>") == 2


def test_writes_from_other_origins_are_refused(store):
    web = client(store)
    form = {"rater": "ann", "item": 0, "left": 6, "right": 1}
    assert web.post("/rate", data=form).status_code == 403  # no Origin
    assert web.post("/rate", data=form, headers={"Origin": "http://evil.example"}).status_code == 403
    assert web.post("/rate", data={**form, "left": 9}, headers=ORIGIN).status_code == 400
    assert store.ratings() == []


def test_all_rated_says_so(store):
    for k in range(12):
        store.rate("ann", k, 3, 3)
    assert "All 12 items rated" in client(store).get("/?rater=ann").get_data(as_text=True)


def test_the_human_eval_diff_and_its_interval():
    ratings = [{"rater": "ann", "item": k, "score_a": 3, "score_b": 4 + k % 2} for k in range(200)]
    diff = human_eval_diff(_per_item(ratings))
    assert diff["diff"] == pytest.approx(1.5) and diff["p_value"] == pytest.approx(1 / 1001)
    # The per-item difference is 1 or 2 (sd 0.5): the interval's half-width is about 1.96 * 0.5 / sqrt(200).
    assert diff["diff_ci"] == pytest.approx(1.96 * 0.5 / 200 ** 0.5, abs=0.015)
    def diff_of(count, a, b):
        return human_eval_diff(_per_item([{"rater": "ann", "item": k, "score_a": a, "score_b": b}
                                          for k in range(count)]))

    same = diff_of(20, 3, 3)
    assert same["diff"] == 0 and same["p_value"] == 1.0
    few = diff_of(9, 3, 5)
    assert few["diff"] == 2 and few["p_value"] is None and few["diff_ci"] is None  # too few items to resample
    assert "too few for an interval" in markdown({"systems": ["a", "b"], "ratings": 9, "items": 9,
                                                  "raters": {"ann": 9}, "human_eval_diff": few,
                                                  "agreement": [], "reward_correlations": {}})


def test_agreement_between_raters():
    ann = [{"rater": "ann", "item": k, "score_a": k % 7, "score_b": (k + 3) % 7} for k in range(10)]
    bob = [{**r, "rater": "bob"} for r in ann[:6]]
    eve = [{**r, "rater": "eve", "score_a": 6 - r["score_a"], "score_b": 6 - r["score_b"]} for r in ann]
    pairs = {tuple(p["raters"]): p for p in rater_agreement(ann + bob + eve)}
    assert pairs[("ann", "bob")]["items"] == 6 and pairs[("ann", "bob")]["spearman"] == pytest.approx(1.0)
    assert pairs[("ann", "bob")]["same_score"] == 1.0 and pairs[("ann", "bob")]["mean_abs_difference"] == 0
    assert pairs[("ann", "eve")]["spearman"] == pytest.approx(-1.0)


def test_the_report_correlates_human_scores_with_rewards(store):
    for k in range(12):  # A gets 2 where it shows on the left, 5 elsewhere; B the other way round
        store.rate("ann", k, 2, 5)
    session = Session.load(store, ["exact"])
    found = report(session)
    assert found["ratings"] == 12 and found["raters"] == {"ann": 12}
    human = session.human_scores()  # A's, then B's
    assert human == [2.0 if a_on_left("ann", k) else 5.0 for k in range(12)] + \
        [5.0 if a_on_left("ann", k) else 2.0 for k in range(12)]
    # The files' rewards: 0.5 for every A, 0.7 for every B. `exact` (hyp against ref) is 0 for all:
    # a constant has no ranking.
    files = found["reward_correlations"]["reward (from the files)"]
    assert files["outputs"] == 24
    assert files["spearman"] == pytest.approx(spearman(human, [0.5] * 12 + [0.7] * 12))
    assert session.rewards["exact"] == [0.0] * 24
    assert found["reward_correlations"]["exact"]["spearman"] is None
    assert "Human eval diff (B − A, 0-6 scale)" in markdown(found)


def test_a_reward_needing_a_field_the_outputs_lack_is_one_line(tmp_path):
    a = [{"id": k, "src": f"quelle {k}", "hyp": f"A {k}"} for k in range(3)]
    b = [{"id": k, "src": f"quelle {k}", "hyp": f"B {k}"} for k in range(3)]
    store = RatingStore.create_or_open(tmp_path / "r.sqlite", items_of(a, b), ("a", "b"))
    store.rate("ann", 0, 1, 2)
    with pytest.raises(UsageError, match="reward 'chrf' needs 'ref', which the rated outputs do not"):
        Session.load(store, ["chrf"])


def test_two_raters_at_once_lose_nothing(store):
    import threading

    def rate_all(rater):
        for k in range(12):
            store.rate(rater, k, k % 7, 6 - k % 7)

    threads = [threading.Thread(target=rate_all, args=(name,)) for name in ("ann", "bob", "eve")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.ratings()) == 36 and {store.rated(name) for name in ("ann", "bob", "eve")} == {12}


@pytest.mark.subprocess
def test_rate_report_on_the_command_line(store, tmp_path):
    for k in range(12):
        store.rate("ann", k, 4, 2)
    out = rest("rate", "--report", "--ratings", str(tmp_path / "ratings.sqlite"), "-r", "chrf",
               "--plot", str(tmp_path / "h.png"))
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["ratings"] == 12 and "chrf" in found["reward_correlations"]
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG" and "Human eval diff" in out.stderr.decode()


@pytest.mark.subprocess
@pytest.mark.parametrize("args, message", [
    ([], "give two files of outputs (system A, then B), or --report"),
    (["x.jsonl", "--report"], "--report reads the ratings database only"),
    (["a", "b", "-r", "chrf"], "--reward and --plot belong to --report"),
])
def test_rate_usage_errors_are_one_line(tmp_path, args, message):
    out = rest("rate", *args)
    assert out.returncode == 2 and message in out.stderr.decode().splitlines()[-1]


@pytest.mark.subprocess
def test_rate_refuses_outputs_of_other_sources(tmp_path):
    a, b = outputs(3)
    b[1]["src"] = "anders"
    out = rest("rate", str(write_jsonl(tmp_path / "a.jsonl", a)), str(write_jsonl(tmp_path / "b.jsonl", b)),
               "--ratings", str(tmp_path / "r.sqlite"))
    assert out.returncode == 3 and "b.jsonl:2: not the same source as record 2" in out.stderr.decode()
    assert not (tmp_path / "r.sqlite").exists()
