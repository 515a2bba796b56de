"""``--workers N``: the supervisor (:mod:`~trioecho.workers.supervisor`) and a
worker's side of its link with it (:mod:`~trioecho.workers.link`).
"""
