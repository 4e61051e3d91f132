"""Compatibility only: ``tests.e2e.helpers`` re-exports ``tests.helpers`` for files that still
import it. The end-to-end tests now live with the guarantee they check."""
