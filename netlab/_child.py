"""The server process started by ``netlab.serve``: reads its spec from stdin and runs it."""

from netlab.lifecycle import child_main

child_main()
