"""The ReST loop: the decisions rest.mk asks for between steps, its run-folder layout, and the report."""
