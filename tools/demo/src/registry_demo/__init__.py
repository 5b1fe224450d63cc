"""The pilot programme end to end (``make demo``): a population seeded and three periods driven through the
public API only, ending with the ledger audit, the journal verification and the transfer reconciliation."""
