"""`rest rate`: the rating page over a ratings database (rating.py).

GET / asks for the rater's name; GET /?rater=NAME shows that rater's first unrated item (or
&item=K, one already rated, to change it): the source, the two outputs in the rater's blind
order, a 0-6 score for each, keyboard shortcuts and a count of what is done. POST /rate stores a
rating and moves on; it is refused unless it comes from this server's own page.
"""

from __future__ import annotations

from rest_cli.errors import UsageError
from rest_cli.view.pages import make_app, same_origin
from rest_cli.view.rating import SCORES, RatingStore, a_on_left


def rate_app(store: RatingStore, hosts: list[str]):
    """The Flask app of `rest rate` over `store`, answering requests addressed to `hosts`."""
    from flask import abort, redirect, render_template, request, url_for

    app = make_app(__name__, hosts)
    total = store.count()

    @app.get("/")
    def rate_page():
        rater = request.args.get("rater", "").strip()
        if not rater:
            return render_template("rate.html", rater="", total=total)
        number = request.args.get("item", type=int)
        if number is None:
            number = store.next_unrated(rater)
        item = None if number is None else store.item(number)
        if number is not None and item is None:
            abort(404)
        given = store.rating(rater, number) if item else None
        left_is_a = item is not None and a_on_left(rater, item.item)
        outputs = None
        if item:
            outputs = (item.hyp_a, item.hyp_b) if left_is_a else (item.hyp_b, item.hyp_a)
        scores = None
        if given:
            scores = (given["score_a"], given["score_b"])
            scores = scores if left_is_a else scores[::-1]
        return render_template("rate.html", rater=rater, total=total, done=store.rated(rater), item=item,
                               outputs=outputs, given=scores, scale=list(SCORES))

    @app.post("/rate")
    def rate():
        if not same_origin(request):
            abort(403)
        form = request.form
        rater = form.get("rater", "").strip()
        try:
            store.rate(rater, int(form["item"]), int(form["left"]), int(form["right"]))
        except (KeyError, ValueError, UsageError):
            abort(400)
        return redirect(url_for("rate_page", rater=rater), code=303)

    return app
