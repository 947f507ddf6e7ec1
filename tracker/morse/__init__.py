"""The Morse-graph method (seed 003): DOODL3 ensembles of small models and the Morse graphs
(GP map + CMGDB) of their early -> final weights.

    rows.py     ensembles and Morse graphs: specs, checks, rows and tasks, finders
    kinds.py    the task kinds ``ensemble.train``, ``ensemble.complete`` and ``morse``
    results.py  an ensemble's weights and a computed graph with what its figures need
    plots.py    the one drawing of a Morse graph (Graphviz), Morse sets, violins
    cli.py      `tracker enqueue ensemble|morse`, `show morse`, `plot morse`
"""
