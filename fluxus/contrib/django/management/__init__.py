"""Management commands of fluxus."""
