"""The challenge's submission HTTP API over nextai's generation (`nextai serve`)."""
