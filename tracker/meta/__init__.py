"""Meta-analysis: measures as rows and their rank correlation with generalisation (issue 16).

    rows.py     one function per measure family -> per-seed samples -> ``measures`` rows
    results.py  Kendall and granulated tau per definition and epoch; measure tables
    publish.py  measures as metrics on each model's MLflow run
    kinds.py    ``measures.refresh``: the rows brought up to date where results land
    cli.py      `tracker meta --study S [--json]`
"""
