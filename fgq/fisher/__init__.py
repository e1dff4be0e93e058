"""The task Fisher: computation (``compute``), its cache (``cache``) and its pictures (``plots``)."""
