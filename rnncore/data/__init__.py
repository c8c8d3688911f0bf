"""Data: built-in corpora and the vocabularies and batches built from them."""

from rnncore.data.corpora import python_docs_text

__all__ = ["python_docs_text"]
