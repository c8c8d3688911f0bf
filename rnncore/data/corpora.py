"""Built-in corpora that need no network.

``python_docs_text``: the Python language reference topics that CPython itself ships as
``pydoc_data.topics`` (about 465,000 characters of English prose and code; PSF licence). Every
Python installation has it, so examples and tests can train on real text offline.
"""


def python_docs_text(max_chars=None):
    """The pydoc topics joined in sorted topic order (a stable text across runs)."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[key] for key in sorted(topics))
    if max_chars is not None:
        if max_chars < 1:
            raise ValueError(f"max_chars must be >= 1, got {max_chars}")
        text = text[:max_chars]
    return text
