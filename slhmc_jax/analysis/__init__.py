"""Compare: structural observables, statistics, diagnostics, report and run directory."""
