"""Reports over stored rows: pure metrics (metrics.py), the DB read (build.py), rendering (render.py)."""
