"""Every test runs with GRAPHC_VERIFY_CALLS=1: each time a compiled function reuses its last choice of
executable without recomputing the cache key (graphc/callpath.py), the full key is computed as well and must
agree, so the whole suite checks that graphc/epoch.py notices every change that matters."""
import os

os.environ.setdefault("GRAPHC_VERIFY_CALLS", "1")
