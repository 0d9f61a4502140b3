"""The notebooks, and `python -m notebooks.run`, which executes them and saves their outputs."""
