"""vgrad's analysis package: reads the study's Parquet with pandas/pyarrow only.

It never imports torch or ray, so a notebook can use it on a laptop.  Its modules
(load, metrics, theory, figures, claims, report) arrive with the analysis issue.
"""
