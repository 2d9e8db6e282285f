"""`python -m bench`: trustgap's worker measured beside the raw consumer and a bare Faust agent, in one run."""
