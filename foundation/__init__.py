"""The foundation every other package stands on, importing nothing of tianyan's own.

- :mod:`foundation.contract` — the wire contract: what a terminal sends.
- :mod:`foundation.records` — the stream shapes the pipeline makes of it (windows, trips).
- :mod:`foundation.settings` — the ``TIANYAN_*`` settings.
- :mod:`foundation.city` — facts of the city the pipeline serves (its time zone).
"""
