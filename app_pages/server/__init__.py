"""Session, cache, background jobs, trainer status and the Host check behind the pages."""
