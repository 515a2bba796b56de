"""What the tests share: stream pairs and an in-process server
(``helpers``), real server processes and their canary client
(``serverproc``), external daemons (``liveservers``: PostgreSQL,
mosquitto), PROXY protocol headers (``proxyheaders``), and ``freezer``, the
fault injection put on the path of the worker tests' servers."""
