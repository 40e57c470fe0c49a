"""tools/reproduce.py's papers: one module ``paperNNN.py`` per paper, each with ``PAPER`` (core.Paper)."""
