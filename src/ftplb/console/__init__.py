"""``ftplb status`` and ``ftplb top``: the stats page's tables in a terminal."""
