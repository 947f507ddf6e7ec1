"""Curvature (issue 15): Hessian spectra of a model's checkpoints, as PyHessian measures them.

    rows.py     the ``hessian_spectra`` rows and their tasks, one per (checkpoint, measure),
                and one ``directions`` row (kind 'hessian') per requested eigenvector
    kinds.py    the task kind ``hessian``: rows -> ``compute.curvature`` -> rows and arrays
    results.py  spectra as frozen values, their arrays, top-k over training, curvature maps
    plots.py    density (log y), eigenvalue convergence, top-k per epoch, lambda_min/max map
    cli.py      `tracker enqueue hessian`, `show hessian`, `plot hessian`

Surfaces along eigenvectors (`--x-direction hessian:0`) and Goldstein's min/max eigenvalue map
(`--curvature`) are surface options: tracker.surfaces reads the direction rows this package
writes, and computes the map itself with ``compute.curvature``.
"""
