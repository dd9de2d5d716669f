"""Looking at the data and rating it: `rest view` and `rest rate` (docs/view.md)."""
