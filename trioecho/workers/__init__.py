"""``--workers N``: the supervisor (:mod:`~trioecho.workers.supervisor`, which
runs :mod:`~trioecho.workers.decisions` over :mod:`~trioecho.workers.processes`)
and a worker's side of its link with it (:mod:`~trioecho.workers.link`).
"""
