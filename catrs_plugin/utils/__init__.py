"""The plumbing every layer uses: provenance records, atomic writes, readers of outside files, argument checks.
Imports nothing of catrs_plugin (only the standard library, numpy and torch)."""
