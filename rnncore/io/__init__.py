"""Weights to and from other frameworks' formats (``rnncore.io.keras``: Keras 3 RNN layers)."""
