"""`nextai serve`: the challenge's submission HTTP API and OpenAI-compatible routes over nextai's generation."""
