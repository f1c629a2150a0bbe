"""tuneline: the library behind the pipeline's stages. Plain functions and small classes;
it never imports stages, flows, prefect or dvc."""

__version__ = "0.1.0"
