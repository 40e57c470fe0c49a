"""Edge model caching of pretrained foundation models (paper 002): see :mod:`.layer`."""
