"""Evaluation the way the NeurIPS 2023 LLM Efficiency Challenge scored it (HELM's run specs), generation shared
with `nextai serve`, mean win rate across runs, and merged-weight export."""
