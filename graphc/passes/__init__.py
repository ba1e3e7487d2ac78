"""Graph -> Graph transformations (and the autodiff walk shared with eager backward)."""
