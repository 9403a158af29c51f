"""The ``redray`` command line: ``worker``, ``start``, ``stop`` and ``status`` (see ``main``)."""
