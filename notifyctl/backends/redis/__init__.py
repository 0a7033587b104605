"""Scale-out: the same pipeline across machines on Redis."""
