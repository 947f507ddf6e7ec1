"""The level-set method (seed 002): predictor/corrector traversals of a training-loss level set
and the L2 baseline they are compared with.

    rows.py     the runs' rows and tasks, added by spec hash
    kinds.py    the task kinds ``levelset.run`` and ``levelset.l2``
    results.py  finished runs, Table 1, Figure 2's series, Figure 7's PCA
    plots.py    Figure 2 and Figure 7 as PNG and PDF
    cli.py      `tracker enqueue levelset`, `enqueue l2-baseline`, `plot levelset`
"""
