"""The device-side subcommands of ``keras-edge``, one module each: :mod:`.predict`,
:mod:`.inspect` and :mod:`.verify`. Each has ``configure(name, parser)``, which the dispatcher
(``keras_edge.cli``) calls for the subcommand that runs, and sets the parser's handler.
``inspect`` and ``verify`` import the device core alone; ``predict`` imports offline scoring
(:mod:`keras_edge.runtime.batch`) only when it runs."""
