"""MoE expert parallelism on vehicles with Stackelberg pricing (paper 001): see :mod:`.layer`."""
