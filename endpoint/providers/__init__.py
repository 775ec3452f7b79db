"""Providers of blocks (pilot jobs): local processes, or any scheduler through PSI/J."""
