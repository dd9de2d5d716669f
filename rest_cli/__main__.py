import os
import sys

# `python -m rest_cli` puts the current directory first on sys.path, where a stray file (say, a
# sacrebleu.py) would shadow rest's own dependencies; the installed `rest` script does not. rest
# itself is imported already, so the entry can go; `py:` rewards search the directory last.
if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from rest_cli.cli.main import main  # noqa: E402

main()
