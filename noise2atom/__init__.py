"""noise2atom."""
