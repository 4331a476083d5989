"""Persons: the faces of a tenant grouped into people.

:mod:`.clustering` holds the grouping rules (pure functions), :mod:`.graph` builds the
nearest-neighbour graph they work on from the vector store.
"""
