"""The command line and its tools: :mod:`~trioecho.cli.main` (the entry point),
:mod:`~trioecho.cli.options` (the parser's declarations), with
:mod:`~trioecho.cli.option_types` (what each option's text means) and
:mod:`~trioecho.cli.framing_args` (the framing flags and the configuration
they build); :mod:`~trioecho.cli.configs` (the flags mapped onto the
library's configurations), :mod:`~trioecho.cli.worker` (a worker of
``serve --workers N``), :mod:`~trioecho.cli.serve`
(serve and relay), :mod:`~trioecho.cli.client`, :mod:`~trioecho.cli.demo`,
:mod:`~trioecho.cli.bench` with its C load generator (``_cloadgen``) and TLS
load (``_tlsload``); :mod:`~trioecho.cli.echo_policy` and
:mod:`~trioecho.cli.tuning` hold what ``serve`` decides before it starts.
"""
