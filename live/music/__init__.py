"""Generated music: melodies on a beat grid, the models that write them, and the part that plays them live."""
