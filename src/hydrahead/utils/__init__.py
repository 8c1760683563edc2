"""Small process-level helpers: atomic writes, the C heap policy, where shipped files and outputs live."""
