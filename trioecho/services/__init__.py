"""Services built on the server: the echo service (:mod:`~trioecho.services.echo`
with its sans-IO session :mod:`~trioecho.services.echo_session`, the C engine
``_cecho`` and its twin ``_pyecho``, and the client's greeting check
:mod:`~trioecho.services.greeting`), and the frame relay
(:mod:`~trioecho.services.relay`: the server, with its settings in
``relay_config``, each connection's setup in ``relay_connection``, a pair's
two ways and their endings in ``relay_pair``, one way in ``relay_pump``).
"""
